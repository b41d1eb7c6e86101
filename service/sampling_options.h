// A turn's sampling settings: the request's fields over the session's defaults over the
// server's, checked once before anything runs.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "gistmem/v1/gistmem.pb.h"
#include "model/sampling.h"
#include "service/config.h"

namespace gistmem::service {

struct TurnSampling {
  model::SamplingParams params;
  int64_t max_tokens = 0;
};

// `overrides` field by field over `session_defaults`; unset fields take the model's defaults
// and limits.default_max_tokens. INVALID_ARGUMENT naming the field when a value is out of
// range (including max_tokens above limits.max_new_tokens).
absl::StatusOr<TurnSampling> ResolveSampling(const v1::SamplingParams& session_defaults,
                                             const v1::SamplingParams& overrides,
                                             const Limits& limits);

// The checks of ResolveSampling for a session's defaults alone (CreateSession).
absl::Status ValidateSamplingDefaults(const v1::SamplingParams& defaults, const Limits& limits);

}  // namespace gistmem::service
