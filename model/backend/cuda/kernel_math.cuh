// Device helpers shared by the kernels of kernels.cu and kv_pages.cu, so that a fused kernel
// and the separate ones it replaces do the same arithmetic (the same bits). Internal to the
// CUDA backend.
#pragma once

#include <cstdint>

#include "memory/kv_layout.h"

namespace gistmem::cuda {

// Rotate-half RoPE of one pair (a, b) of a head at `position` (ops.h ApplyRope). sincosf, not
// the fast intrinsics: angles reach position * 1 radian, far outside their accurate range.
__device__ __forceinline__ void RotatePair(float a, float b, float position, float inv_freq,
                                           float& out_a, float& out_b) {
  float s, c;
  sincosf(position * inv_freq, &s, &c);
  out_a = a * c - b * s;
  out_b = b * c + a * s;
}

// Element offset of (page, layer, kv, slot) in a bf16 pool (memory/kv_layout.h).
__device__ __forceinline__ int64_t PageRowStart(const memory::PageLayout& layout, int32_t page,
                                                int32_t layer, int32_t kv, int32_t slot) {
  return static_cast<int64_t>(page) * layout.num_layers * 2 * layout.block_size * layout.kv_dim +
         ((static_cast<int64_t>(layer) * 2 + kv) * layout.block_size + slot) * layout.kv_dim;
}

}  // namespace gistmem::cuda
