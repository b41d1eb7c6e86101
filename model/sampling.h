// Choosing the next token from logits: greedy, or seeded sampling with the usual filters,
// applied in Hugging Face's order (repetition penalty, temperature, top-k, top-p).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>

namespace gistmem::model {

struct SamplingParams {
  float temperature = 0.f;         // 0 = greedy
  int32_t top_k = 0;               // 0 = off
  float top_p = 1.f;               // 1 = off
  float repetition_penalty = 1.f;  // 1 = off
  uint64_t seed = 0;

  // Empty when valid, else a message naming the field and its allowed range.
  std::string Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Same params, seed and inputs give the same tokens: a session can be replayed.
  int32_t Sample(std::span<const float> logits, std::span<const int32_t> previous_tokens);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace gistmem::model
