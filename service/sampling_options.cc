#include "service/sampling_options.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace gistmem::service {
namespace {

v1::SamplingParams Merge(const v1::SamplingParams& base, const v1::SamplingParams& overrides) {
  v1::SamplingParams merged = base;
  if (overrides.has_temperature()) merged.set_temperature(overrides.temperature());
  if (overrides.has_top_k()) merged.set_top_k(overrides.top_k());
  if (overrides.has_top_p()) merged.set_top_p(overrides.top_p());
  if (overrides.has_repetition_penalty()) {
    merged.set_repetition_penalty(overrides.repetition_penalty());
  }
  if (overrides.has_seed()) merged.set_seed(overrides.seed());
  if (overrides.has_max_tokens()) merged.set_max_tokens(overrides.max_tokens());
  return merged;
}

absl::Status OutOfRange(std::string_view field, std::string_view range, double value) {
  return absl::InvalidArgumentError(absl::StrCat("sampling.", std::string(field), " must be ",
                                                 std::string(range), ", got ", value));
}

absl::StatusOr<TurnSampling> Resolve(const v1::SamplingParams& merged, const Limits& limits) {
  TurnSampling sampling;
  model::SamplingParams& params = sampling.params;
  if (merged.has_temperature()) {
    if (!std::isfinite(merged.temperature()) || merged.temperature() < 0 ||
        merged.temperature() > 100) {
      return OutOfRange("temperature", "in [0, 100]", merged.temperature());
    }
    params.temperature = merged.temperature();
  }
  if (merged.has_top_k()) {
    if (merged.top_k() < 0) return OutOfRange("top_k", ">= 0", merged.top_k());
    params.top_k = merged.top_k();
  }
  if (merged.has_top_p()) {
    if (!(merged.top_p() > 0 && merged.top_p() <= 1)) {
      return OutOfRange("top_p", "in (0, 1]", merged.top_p());
    }
    params.top_p = merged.top_p();
  }
  if (merged.has_repetition_penalty()) {
    if (!std::isfinite(merged.repetition_penalty()) || merged.repetition_penalty() <= 0) {
      return OutOfRange("repetition_penalty", "> 0", merged.repetition_penalty());
    }
    params.repetition_penalty = merged.repetition_penalty();
  }
  if (merged.has_seed()) params.seed = merged.seed();
  sampling.max_tokens = limits.default_max_tokens;
  if (merged.has_max_tokens()) {
    if (merged.max_tokens() < 1 || merged.max_tokens() > limits.max_new_tokens) {
      return OutOfRange("max_tokens", absl::StrCat("in [1, ", limits.max_new_tokens, "]"),
                        merged.max_tokens());
    }
    sampling.max_tokens = merged.max_tokens();
  }
  // The runtime's own rules, in case they are stricter than ours.
  if (const std::string error = params.Validate(); !error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: ", error));
  }
  return sampling;
}

}  // namespace

absl::StatusOr<TurnSampling> ResolveSampling(const v1::SamplingParams& session_defaults,
                                             const v1::SamplingParams& overrides,
                                             const Limits& limits) {
  return Resolve(Merge(session_defaults, overrides), limits);
}

absl::Status ValidateSamplingDefaults(const v1::SamplingParams& defaults, const Limits& limits) {
  return Resolve(defaults, limits).status();
}

}  // namespace gistmem::service
