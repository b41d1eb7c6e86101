// A single-sequence generation loop over an engine, with no memory policy: prefill the
// prompt, then sample one token at a time until a stop token or the token limit. Used by the
// command-line tool; the service's scheduler batches many sequences instead.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "memory/session_kv.h"
#include "model/engine.h"
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

// Appends `prompt` to `kv` (positions continue after its last entry) and generates.
// `history` holds tokens seen before the prompt, for the repetition penalty. INVALID_ARGUMENT
// for an empty prompt; the engine's error when a step fails.
absl::StatusOr<FinishReason> Generate(Engine& engine, memory::SessionKv& kv,
                                      std::span<const int32_t> prompt,
                                      const GenerationOptions& options,
                                      const TokenCallback& on_token,
                                      std::vector<int32_t> history = {});

}  // namespace gistmem::model
