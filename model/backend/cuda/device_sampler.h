// Next-token sampling on the device, over a batch of logits rows already there, with the CPU
// sampler's semantics (model/sampling.h: Hugging Face's order, repetition penalty, temperature,
// top-k, top-p; greedy = argmax, lowest id on ties).
//
// The random draw is not made here: the caller passes, per sampling row, the uniform the CPU
// sampler would have drawn (model::Sampler::DrawUniform() on the session's sampler), so a
// session sampled on either side draws the same sequence and can move between them. Sums and
// scans run in parallel in double (the CPU sums in order), so a token can differ from the CPU's
// only when the draw or the top-p mass falls within rounding (~1e-15 relative) of a boundary.
//
// Thread-safety: one DeviceSampler per stream; Sample() is not reentrant (it reuses its
// workspace). Cost: one upload, one or two kernels (greedy rows need only the first), a sort
// when a row filters by top-k / top-p, one download of the tokens. Failure: INVALID_ARGUMENT for
// bad params, a row with NaN or +inf, or no finite logit (the CPU's std::invalid_argument);
// RESOURCE_EXHAUSTED / INTERNAL for CUDA failures.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "model/backend/cuda/device_buffer.h"
#include "model/sampling.h"

namespace gistmem::cuda {

struct DeviceSampleRow {
  model::SamplingParams params;              // its seed is unused: `uniform` is the draw
  std::span<const int32_t> previous_tokens;  // for the repetition penalty
  double uniform = 0;                        // in [0, 1); ignored when greedy
};

class DeviceSampler {
 public:
  // Picks one token per row of `logits` (device memory, [rows.size(), vocab] fp32, row-major).
  // Synchronizes `stream` before returning the tokens (no rows: returns at once).
  absl::StatusOr<std::vector<int32_t>> Sample(const float* logits, int64_t vocab,
                                              std::span<const DeviceSampleRow> rows,
                                              cudaStream_t stream = nullptr);

 private:
  DeviceBuffer scores_, ids_, sorted_scores_, sorted_ids_, upload_, temp_, out_;
  std::vector<char> host_;  // the upload's staging: row descriptors, sort offsets, penalized ids
  std::vector<char> seen_;  // [vocab], all zero between calls: distinct penalized ids
};

}  // namespace gistmem::cuda
