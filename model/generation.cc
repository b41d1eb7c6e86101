#include "model/generation.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace gistmem::model {
namespace {

std::vector<int64_t> NextPositions(const KvCache& cache, size_t count) {
  const int64_t first = cache.next_position();
  std::vector<int64_t> positions(count);
  std::iota(positions.begin(), positions.end(), first);
  return positions;
}

}  // namespace

FinishReason Generate(CpuTransformer& model, KvCache& cache, std::span<const int32_t> prompt,
                      const GenerationOptions& options, const TokenCallback& on_token,
                      std::vector<int32_t> history) {
  if (prompt.empty()) throw std::invalid_argument("generation needs at least one prompt token");
  Sampler sampler(options.sampling);
  history.insert(history.end(), prompt.begin(), prompt.end());
  std::vector<float> logits =
      model.Forward(prompt, NextPositions(cache, prompt.size()), cache, LogitsMode::kLast);
  for (int64_t produced = 0; produced < options.max_new_tokens; ++produced) {
    const int32_t token = sampler.Sample(logits, history);
    history.push_back(token);
    if (!on_token(token)) return FinishReason::kCancelled;
    if (std::ranges::find(options.stop_token_ids, token) != options.stop_token_ids.end()) {
      return FinishReason::kStopToken;
    }
    if (produced + 1 == options.max_new_tokens) break;  // no forward for a token never sampled
    const int32_t step[] = {token};
    logits = model.Forward(step, NextPositions(cache, 1), cache, LogitsMode::kLast);
  }
  return FinishReason::kLength;
}

}  // namespace gistmem::model
