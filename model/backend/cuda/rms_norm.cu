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

// One block per row: each thread sums squares over a strided slice, then a shared-memory
// tree reduction gives the row's mean square.
template <typename Out>
__global__ void RmsNormKernel(const float* x, const float* weight, Out* out, int64_t dim,
                              float eps) {
  __shared__ float partial[kThreads];
  const float* row = x + blockIdx.x * dim;
  Out* out_row = out + blockIdx.x * dim;
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    sum += row[i] * row[i];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const float scale = rsqrtf(partial[0] / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    Store(out_row, i, row[i] * scale * weight[i]);
}

}  // namespace

absl::Status RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
                     float eps, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, weight, out, dim, eps);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status RmsNormToBf16(const float* x, const float* weight, void* out, int64_t rows,
                           int64_t dim, float eps, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      x, weight, static_cast<__nv_bfloat16*>(out), dim, eps);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

}  // namespace gistmem::cuda
