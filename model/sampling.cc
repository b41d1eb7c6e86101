#include "model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <unordered_set>
#include <vector>

namespace gistmem::model {

std::string SamplingParams::Validate() const {
  if (!std::isfinite(temperature) || temperature < 0.f || temperature > 100.f) {
    return "temperature must be in [0, 100], got " + std::to_string(temperature);
  }
  if (top_k < 0) return "top_k must be >= 0, got " + std::to_string(top_k);
  if (!std::isfinite(top_p) || top_p <= 0.f || top_p > 1.f) {
    return "top_p must be in (0, 1], got " + std::to_string(top_p);
  }
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0.f) {
    return "repetition_penalty must be > 0, got " + std::to_string(repetition_penalty);
  }
  return "";
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  if (const std::string error = params.Validate(); !error.empty()) {
    throw std::invalid_argument(error);
  }
}

int32_t Sampler::Sample(std::span<const float> logits, std::span<const int32_t> previous_tokens) {
  if (logits.empty()) throw std::invalid_argument("Sample: empty logits");
  std::vector<float> scores(logits.begin(), logits.end());
  if (params_.repetition_penalty != 1.f) {
    // Once per distinct token: positive logits shrink, negative ones grow more negative.
    const std::unordered_set<int32_t> seen(previous_tokens.begin(), previous_tokens.end());
    for (int32_t token : seen) {
      if (token < 0 || token >= static_cast<int32_t>(scores.size())) continue;
      float& s = scores[token];
      s = s > 0 ? s / params_.repetition_penalty : s * params_.repetition_penalty;
    }
  }
  if (params_.temperature == 0.f) {
    // Greedy; the lowest id wins ties.
    return static_cast<int32_t>(std::max_element(scores.begin(), scores.end()) - scores.begin());
  }

  std::vector<int32_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  // Highest score first; ties by id, so the candidate list never depends on sort details.
  auto better = [&](int32_t a, int32_t b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
  };
  size_t keep = order.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    keep = static_cast<size_t>(params_.top_k);
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), better);
  } else {
    std::sort(order.begin(), order.end(), better);
  }
  order.resize(keep);

  std::vector<double> probs(keep);
  const double max = scores[order[0]] / params_.temperature;
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(scores[order[i]] / params_.temperature - max);
    sum += probs[i];
  }
  for (double& p : probs)
    p /= sum;
  if (params_.top_p < 1.f) {
    // The smallest prefix whose mass reaches top_p, and never less than one token.
    double mass = 0;
    size_t cut = 0;
    while (cut < keep) {
      mass += probs[cut++];
      if (mass >= params_.top_p) break;
    }
    probs.resize(cut);
    order.resize(cut);
  }
  std::discrete_distribution<size_t> pick(probs.begin(), probs.end());
  return order[pick(rng_)];
}

}  // namespace gistmem::model
