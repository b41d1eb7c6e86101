#include "model/generation.h"

#include <algorithm>

namespace gistmem::model {
absl::StatusOr<FinishReason> Generate(Engine& engine, memory::SessionKv& kv,
                                      std::span<const int32_t> prompt,
                                      const GenerationOptions& options,
                                      const TokenCallback& on_token, std::vector<int32_t> history) {
  if (prompt.empty()) {
    return absl::InvalidArgumentError("generation needs at least one prompt token");
  }
  Sampler sampler(options.sampling);
  history.insert(history.end(), prompt.begin(), prompt.end());
  absl::StatusOr<std::vector<float>> logits =
      ForwardPlain(engine, kv, prompt, NextPositions(kv, prompt.size()));
  if (!logits.ok()) return logits.status();
  for (int64_t produced = 0; produced < options.max_new_tokens; ++produced) {
    const int32_t token = sampler.Sample(*logits, history);
    history.push_back(token);
    if (!on_token(token)) return FinishReason::kCancelled;
    if (std::ranges::find(options.stop_token_ids, token) != options.stop_token_ids.end()) {
      return FinishReason::kStopToken;
    }
    if (produced + 1 == options.max_new_tokens) break;  // no forward for a token never sampled
    const int32_t step[] = {token};
    logits = ForwardPlain(engine, kv, step, NextPositions(kv, 1));
    if (!logits.ok()) return logits.status();
  }
  return FinishReason::kLength;
}

}  // namespace gistmem::model
