#include "model/backend/cuda/rms_norm.h"

#include <cuda_bf16.h>

#include "model/backend/cuda/cuda_status.h"
#include "model/backend/cuda/kernels.h"

namespace gistmem::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void Store(float* out, int64_t i, float v) {
  out[i] = v;
}
__device__ __forceinline__ void Store(__nv_bfloat16* out, int64_t i, float v) {
  out[i] = __float2bfloat16(v);
}

// 1 / sqrt(mean square + eps) of a row from each thread's sum of squares: a shared-memory tree
// reduction, the same order in every kernel here (so fused and separate ones give the same bits).
__device__ __forceinline__ float InverseRms(float sum, float* partial, int64_t dim, float eps) {
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  return rsqrtf(partial[0] / static_cast<float>(dim) + eps);
}

// One block per output row: each thread sums squares over a strided slice, then a
// shared-memory tree reduction gives the row's mean square. Output row b normalizes input row
// rows[b] (rows null: b). With kAdd the input is x + delta, summed in fp32 as AddInPlace
// does; when rows is null that sum is also written back to x (the residual stream), else x
// is left alone (only the gathered rows are needed). Every variant does each element's
// arithmetic in the same order with the same thread layout, so fused and separate launches
// give the same bits.
template <typename Out, bool kAdd>
__global__ void RmsNormKernel(float* x, const float* delta, const int32_t* rows,
                              const float* weight, Out* out, int64_t dim, float eps) {
  __shared__ float partial[kThreads];
  const int64_t r = rows != nullptr ? rows[blockIdx.x] : blockIdx.x;
  float* row = x + r * dim;
  const float* delta_row = kAdd ? delta + r * dim : nullptr;
  const bool write_back = kAdd && rows == nullptr;
  Out* out_row = out + blockIdx.x * dim;
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = row[i];
    if constexpr (kAdd) {
      v += delta_row[i];
      if (write_back) row[i] = v;
    }
    sum += v * v;
  }
  const float scale = InverseRms(sum, partial, dim, eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = row[i];  // with write_back: this thread's own sum, written above
    if constexpr (kAdd) {
      if (!write_back) v += delta_row[i];
    }
    Store(out_row, i, v * scale * weight[i]);
  }
}

// Embedding rows widened to fp32 into x, and their RMSNorm as bf16: EmbeddingLookup then
// RmsNormToBf16, with the same per-thread slices.
__global__ void EmbedRmsNormKernel(const __nv_bfloat16* table, const int32_t* tokens, float* x,
                                   const float* weight, __nv_bfloat16* out, int64_t dim,
                                   float eps) {
  __shared__ float partial[kThreads];
  const __nv_bfloat16* embedding = table + static_cast<int64_t>(tokens[blockIdx.x]) * dim;
  float* row = x + static_cast<int64_t>(blockIdx.x) * dim;
  __nv_bfloat16* out_row = out + static_cast<int64_t>(blockIdx.x) * dim;
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = __bfloat162float(embedding[i]);
    row[i] = v;
    sum += v * v;
  }
  const float scale = InverseRms(sum, partial, dim, eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    Store(out_row, i, row[i] * scale * weight[i]);
}

}  // namespace

absl::Status RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
                     float eps, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  RmsNormKernel<float, false><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      const_cast<float*>(x), nullptr, nullptr, weight, out, dim, eps);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status RmsNormToBf16(const float* x, const float* weight, void* out, int64_t rows,
                           int64_t dim, float eps, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  RmsNormKernel<__nv_bfloat16, false><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      const_cast<float*>(x), nullptr, nullptr, weight, static_cast<__nv_bfloat16*>(out), dim, eps);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status AddRmsNormToBf16(float* x, const float* delta, const float* weight, void* out,
                              int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  RmsNormKernel<__nv_bfloat16, true><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      x, delta, nullptr, weight, static_cast<__nv_bfloat16*>(out), dim, eps);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status GatherAddRmsNormToBf16(const float* x, const float* delta, const int32_t* rows,
                                    const float* weight, void* out, int64_t count, int64_t dim,
                                    float eps, cudaStream_t stream) {
  if (count == 0) return absl::OkStatus();
  // x is only read when rows is given (the kernel writes back only without rows).
  RmsNormKernel<__nv_bfloat16, true><<<static_cast<unsigned>(count), kThreads, 0, stream>>>(
      const_cast<float*>(x), delta, rows, weight, static_cast<__nv_bfloat16*>(out), dim, eps);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status EmbedRmsNormToBf16(const void* embedding, const int32_t* tokens, float* x,
                                const float* weight, void* out, int64_t rows, int64_t dim,
                                float eps, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  EmbedRmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(embedding), tokens, x, weight,
      static_cast<__nv_bfloat16*>(out), dim, eps);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

}  // namespace gistmem::cuda
