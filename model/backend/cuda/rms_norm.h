// RMSNorm on the GPU: out = x * rsqrt(mean(x^2) + eps) * weight, row by row, fp32.
// Same function as the CPU reference gistmem::model::RmsNorm (model/backend/cpu/ops.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace gistmem::cuda {

// All pointers are device memory; x and out may alias. Asynchronous on `stream`.
void RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim, float eps,
             cudaStream_t stream);

}  // namespace gistmem::cuda
