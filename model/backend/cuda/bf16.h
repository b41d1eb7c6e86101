// Host-side bfloat16 conversion (round to nearest even, as torch's .to(torch.bfloat16)) and
// the upload of checkpoint tensors to the device as bf16.
//
// Bits are held in uint16_t on the host so that host code needs no CUDA headers beyond the
// runtime; device code reinterprets them as __nv_bfloat16 (same layout).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "model/backend/cuda/device_buffer.h"
#include "model/weights.h"

namespace gistmem::cuda {

uint16_t FloatToBf16(float value);  // NaN stays NaN; rounds to nearest even
float Bf16ToFloat(uint16_t bits);   // exact
float HalfToFloat(uint16_t bits);   // IEEE binary16, exact

// Appends `tensor` (F32, F16 or BF16) as bf16 bits to `out`.
void AppendAsBf16(const model::TensorView& tensor, std::vector<uint16_t>& out);
std::vector<uint16_t> ToBf16(std::span<const float> values);

// A new device buffer holding `tensor` (or the concatenation of `tensors`, in order) as bf16.
// RESOURCE_EXHAUSTED when the device is out of memory.
absl::StatusOr<DeviceBuffer> UploadAsBf16(std::span<const model::TensorView* const> tensors);
absl::StatusOr<DeviceBuffer> UploadAsBf16(std::span<const float> values);

}  // namespace gistmem::cuda
