// Choosing the next token from logits: greedy, or seeded sampling with the usual filters,
// with Hugging Face's semantics and order: repetition penalty, temperature, top-k, top-p.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>

namespace gistmem::model {

struct SamplingParams {
  float temperature = 0.f;         // 0 = greedy; at most 100
  int32_t top_k = 0;               // 0 = off
  float top_p = 1.f;               // in (0, 1]; 1 = off
  float repetition_penalty = 1.f;  // > 0; 1 = off
  uint64_t seed = 0;

  // Empty when valid, else a message naming the field and its allowed range.
  std::string Validate() const;
};

// Sample()'s pick for one row with the uniform draw given instead of drawn (ignored when
// greedy): what a backend sampling elsewhere must match, and how a test finds whether a
// different token came from a draw at a rounding boundary. Throws as Sample().
int32_t SampleWithUniform(const SamplingParams& params, std::span<const float> logits,
                          std::span<const int32_t> previous_tokens, double uniform);

class Sampler {
 public:
  // Throws std::invalid_argument with Validate()'s message on invalid params.
  explicit Sampler(const SamplingParams& params);

  // Picks a token id from one row of logits. `previous_tokens` feed the repetition penalty
  // (each distinct id once; ids outside the logits are ignored). Greedy returns the argmax
  // (lowest id on ties) and draws no random number; sampling draws exactly one. The same
  // params and the same sequence of inputs give the same tokens, so a session can be replayed.
  // Throws std::invalid_argument for empty logits, NaN or +inf, or no finite logit.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> previous_tokens);

  // Draws the one uniform in [0, 1) that Sample() would draw for a sampling (non-greedy) row,
  // advancing the same state: a backend that samples elsewhere (cuda::DeviceSampler) takes it,
  // so the session's draws stay the CPU's. Greedy rows must not call it (Sample draws none).
  double DrawUniform();

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace gistmem::model
