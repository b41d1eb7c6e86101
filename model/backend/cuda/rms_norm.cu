#include "model/backend/cuda/rms_norm.h"

#include "model/backend/cuda/cuda_check.h"

namespace gistmem::cuda {
namespace {

constexpr int kThreads = 256;

// One block per row: each thread sums squares over a strided slice, then a shared-memory
// tree reduction gives the row's mean square.
__global__ void RmsNormKernel(const float* x, const float* weight, float* out, int64_t dim,
                              float eps) {
  __shared__ float partial[kThreads];
  const float* row = x + blockIdx.x * dim;
  float* out_row = out + blockIdx.x * dim;
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
    out_row[i] = row[i] * scale * weight[i];
}

}  // namespace

void RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim, float eps,
             cudaStream_t stream) {
  if (rows == 0) return;
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, weight, out, dim, eps);
  GISTMEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace gistmem::cuda
