#include "model/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace gistmem::model {
namespace {

void CheckLogits(std::span<const float> logits) {
  if (logits.empty()) throw std::invalid_argument("sampling: empty logits");
  bool any_finite = false;
  for (float logit : logits) {
    if (std::isnan(logit) || logit == std::numeric_limits<float>::infinity()) {
      throw std::invalid_argument("sampling: logits contain NaN or +inf");
    }
    any_finite = any_finite || std::isfinite(logit);
  }
  if (!any_finite) throw std::invalid_argument("sampling: no finite logit");
}

// transformers' RepetitionPenaltyLogitsProcessor: every distinct earlier token once;
// positive scores shrink, negative ones grow more negative.
void PenalizeRepeats(std::vector<float>& scores, std::span<const int32_t> previous_tokens,
                     float penalty) {
  std::vector<bool> done(scores.size(), false);
  for (int32_t token : previous_tokens) {
    if (token < 0 || static_cast<size_t>(token) >= scores.size() || done[token]) continue;
    done[token] = true;
    float& s = scores[token];
    s = s < 0 ? s * penalty : s / penalty;
  }
}

int32_t Argmax(const std::vector<float>& scores) {
  // max_element returns the first maximum: the lowest id wins ties, as torch.argmax.
  return static_cast<int32_t>(std::max_element(scores.begin(), scores.end()) - scores.begin());
}

// Token ids by decreasing score, ties by increasing id, so the order is fully determined.
std::vector<int32_t> ByDecreasingScore(const std::vector<float>& scores) {
  std::vector<int32_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
  });
  return order;
}

// transformers' TopKLogitsWarper keeps every token scoring at least the k-th best score.
void KeepTopK(std::vector<int32_t>& sorted, const std::vector<float>& scores, int32_t k) {
  if (k <= 0 || static_cast<size_t>(k) >= sorted.size()) return;
  const float threshold = scores[sorted[k - 1]];
  size_t keep = static_cast<size_t>(k);
  while (keep < sorted.size() && scores[sorted[keep]] >= threshold)
    ++keep;
  sorted.resize(keep);
}

// Softmax of score / temperature over the candidates, in double: subtracting the maximum
// before dividing keeps tiny temperatures from overflowing.
std::vector<double> Probabilities(std::span<const int32_t> candidates,
                                  const std::vector<float>& scores, float temperature) {
  float max = -std::numeric_limits<float>::infinity();
  for (int32_t token : candidates)
    max = std::max(max, scores[token]);
  std::vector<double> probs(candidates.size());
  double sum = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    probs[i] = std::exp((static_cast<double>(scores[candidates[i]]) - max) / temperature);
    sum += probs[i];
  }
  for (double& p : probs)
    p /= sum;
  return probs;
}

// transformers' TopPLogitsWarper: the smallest best-first prefix whose mass reaches top_p,
// never less than one token.
size_t TopPCount(const std::vector<double>& sorted_probs, float top_p) {
  double mass = 0;
  size_t keep = 0;
  while (keep < sorted_probs.size()) {
    mass += sorted_probs[keep++];
    if (mass >= top_p) break;
  }
  return keep;
}

// A uniform double in [0, 1) from the top 53 bits, the same on every standard library.
double UniformUnit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// The pick after the checks: penalty, greedy or the filtered softmax's inverse CDF at `uniform`.
int32_t Pick(const SamplingParams& params, std::span<const float> logits,
             std::span<const int32_t> previous_tokens, double uniform) {
  std::vector<float> scores(logits.begin(), logits.end());
  if (params.repetition_penalty != 1.f) {
    PenalizeRepeats(scores, previous_tokens, params.repetition_penalty);
  }
  if (params.temperature == 0.f) return Argmax(scores);

  const bool filtered = params.top_k > 0 || params.top_p < 1.f;
  std::vector<int32_t> candidates;
  if (filtered) {
    candidates = ByDecreasingScore(scores);
    KeepTopK(candidates, scores, params.top_k);
  } else {
    candidates.resize(scores.size());  // no filter: id order, no sort needed
    std::iota(candidates.begin(), candidates.end(), 0);
  }
  std::vector<double> probs = Probabilities(candidates, scores, params.temperature);
  if (params.top_p < 1.f) {
    const size_t keep = TopPCount(probs, params.top_p);
    candidates.resize(keep);
    probs.resize(keep);
  }

  // Inverse CDF over the kept candidates; their mass is renormalized by scaling the draw.
  const double total = std::accumulate(probs.begin(), probs.end(), 0.0);
  const double target = uniform * total;
  double cumulative = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    cumulative += probs[i];
    if (target < cumulative) return candidates[i];
  }
  // Rounding left the draw past the last sum: the last candidate with any mass.
  for (size_t i = candidates.size(); i-- > 0;) {
    if (probs[i] > 0) return candidates[i];
  }
  return candidates.front();
}

}  // namespace

std::string SamplingParams::Validate() const {
  if (!std::isfinite(temperature) || temperature < 0.f || temperature > 100.f) {
    return "temperature must be in [0, 100], got " + std::to_string(temperature);
  }
  if (top_k < 0) return "top_k must be >= 0, got " + std::to_string(top_k);
  if (!std::isfinite(top_p) || top_p <= 0.f || top_p > 1.f) {
    return "top_p must be in (0, 1], got " + std::to_string(top_p);
  }
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0.f) {
    return "repetition_penalty must be a finite number > 0, got " +
           std::to_string(repetition_penalty);
  }
  return "";
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  if (const std::string error = params.Validate(); !error.empty()) {
    throw std::invalid_argument(error);
  }
}

double Sampler::DrawUniform() {
  return UniformUnit(rng_);
}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> previous_tokens) {
  CheckLogits(logits);  // before the draw: a bad row draws nothing
  const double uniform = params_.temperature == 0.f ? 0.0 : DrawUniform();
  return Pick(params_, logits, previous_tokens, uniform);
}

int32_t SampleWithUniform(const SamplingParams& params, std::span<const float> logits,
                          std::span<const int32_t> previous_tokens, double uniform) {
  if (const std::string error = params.Validate(); !error.empty()) {
    throw std::invalid_argument(error);
  }
  CheckLogits(logits);
  return Pick(params, logits, previous_tokens, uniform);
}

}  // namespace gistmem::model
