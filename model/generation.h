// A single-sequence generation loop over the CPU transformer: prefill the prompt, then sample
// one token at a time until a stop token or the token limit. Used by the command-line tool;
// the service's scheduler batches many sequences instead.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/backend/cpu/cpu_transformer.h"
#include "model/kv_cache.h"
#include "model/sampling.h"

namespace gistmem::model {

enum class FinishReason { kStopToken, kLength, kCancelled };

struct GenerationOptions {
  int64_t max_new_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> stop_token_ids;  // generation ends after emitting one of these
};

// Called with each generated token; returning false cancels generation.
using TokenCallback = std::function<bool(int32_t token)>;

// Appends `prompt` to `cache` (positions continue after the cache's last entry) and generates.
// `history` holds tokens seen before the prompt, for the repetition penalty.
FinishReason Generate(CpuTransformer& model, KvCache& cache, std::span<const int32_t> prompt,
                      const GenerationOptions& options, const TokenCallback& on_token,
                      std::vector<int32_t> history = {});

}  // namespace gistmem::model
