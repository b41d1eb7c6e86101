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

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace gistmem::model
