#include "model/backend/cuda/kernels.h"

#include <cuda_bf16.h>

#include "model/backend/cuda/cuda_status.h"
#include "model/backend/cuda/kernel_math.cuh"

namespace gistmem::cuda {
namespace {

constexpr int kThreads = 256;

unsigned BlocksFor(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

__global__ void EmbeddingKernel(const __nv_bfloat16* table, const int32_t* tokens, float* out,
                                int64_t hidden) {
  const __nv_bfloat16* row = table + static_cast<int64_t>(tokens[blockIdx.x]) * hidden;
  float* out_row = out + static_cast<int64_t>(blockIdx.x) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x)
    out_row[i] = __bfloat162float(row[i]);
}

// One block per row; thread i rotates pairs (i, i + half) of every head.
__global__ void RopeKernel(float* x, int64_t stride, const int32_t* positions, int64_t num_heads,
                           int64_t head_dim, const float* inv_freq) {
  const int64_t half = head_dim / 2;
  float* row = x + static_cast<int64_t>(blockIdx.x) * stride;
  const float position = static_cast<float>(positions[blockIdx.x]);
  for (int64_t t = threadIdx.x; t < num_heads * half; t += blockDim.x) {
    const int64_t head = t / half, i = t % half;
    float* h = row + head * head_dim;
    RotatePair(h[i], h[i + half], position, inv_freq[i], h[i], h[i + half]);
  }
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t rows, int64_t dim,
                              int64_t stride) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < rows * dim;
       t += int64_t{gridDim.x} * blockDim.x)
    y[(t / dim) * stride + t % dim] += bias[t % dim];
}

__global__ void AddBiasBf16Kernel(__nv_bfloat16* y, const float* bias, int64_t rows, int64_t dim) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < rows * dim;
       t += int64_t{gridDim.x} * blockDim.x)
    y[t] = __float2bfloat16(__bfloat162float(y[t]) + bias[t % dim]);
}

__global__ void SiluMulKernel(const float* gate_up, __nv_bfloat16* out, int64_t rows,
                              int64_t inter) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < rows * inter;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = t / inter, i = t % inter;
    const float g = gate_up[r * 2 * inter + i], u = gate_up[r * 2 * inter + inter + i];
    out[t] = __float2bfloat16(g / (1.f + expf(-g)) * u);
  }
}

__global__ void AddInPlaceKernel(float* x, const float* delta, int64_t count) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < count;
       t += int64_t{gridDim.x} * blockDim.x)
    x[t] += delta[t];
}

__global__ void ToBf16Kernel(const float* in, __nv_bfloat16* out, int64_t count) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < count;
       t += int64_t{gridDim.x} * blockDim.x)
    out[t] = __float2bfloat16(in[t]);
}

__global__ void GatherRowsKernel(const float* x, const int32_t* rows, float* out, int64_t dim) {
  const float* from = x + static_cast<int64_t>(rows[blockIdx.x]) * dim;
  float* to = out + static_cast<int64_t>(blockIdx.x) * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    to[i] = from[i];
}

__global__ void CopyInt32RunsKernel(const Int32Run* runs, int64_t num_runs, const int32_t* source) {
  for (int64_t r = blockIdx.x; r < num_runs; r += gridDim.x) {
    const Int32Run run = runs[r];
    for (int64_t i = threadIdx.x; i < run.count; i += blockDim.x)
      run.dest[i] = source[run.source_offset + i];
  }
}

}  // namespace

absl::Status CopyInt32Runs(const Int32Run* runs, int64_t num_runs, const int32_t* source,
                           cudaStream_t stream) {
  if (num_runs == 0) return absl::OkStatus();
  const auto blocks = static_cast<unsigned>(num_runs < 65535 ? num_runs : 65535);
  CopyInt32RunsKernel<<<blocks, kThreads, 0, stream>>>(runs, num_runs, source);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status EmbeddingLookup(const void* embedding, const int32_t* tokens, float* out, int64_t rows,
                             int64_t hidden, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  EmbeddingKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(embedding), tokens, out, hidden);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status ApplyRope(float* x, int64_t stride, const int32_t* positions, int64_t rows,
                       int64_t num_heads, int64_t head_dim, const float* inv_freq,
                       cudaStream_t stream) {
  if (head_dim % 2 != 0) return absl::InvalidArgumentError("rope: odd head_dim");
  if (rows == 0) return absl::OkStatus();
  RopeKernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(x, stride, positions, num_heads,
                                                              head_dim, inv_freq);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status AddBias(float* y, const float* bias, int64_t rows, int64_t dim, int64_t stride,
                     cudaStream_t stream) {
  if (rows * dim == 0) return absl::OkStatus();
  AddBiasKernel<<<BlocksFor(rows * dim), kThreads, 0, stream>>>(y, bias, rows, dim, stride);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status AddBiasBf16(void* y, const float* bias, int64_t rows, int64_t dim,
                         cudaStream_t stream) {
  if (rows * dim == 0) return absl::OkStatus();
  AddBiasBf16Kernel<<<BlocksFor(rows * dim), kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(y),
                                                                    bias, rows, dim);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status SiluMul(const float* gate_up, void* out, int64_t rows, int64_t inter,
                     cudaStream_t stream) {
  if (rows * inter == 0) return absl::OkStatus();
  SiluMulKernel<<<BlocksFor(rows * inter), kThreads, 0, stream>>>(
      gate_up, static_cast<__nv_bfloat16*>(out), rows, inter);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status AddInPlace(float* x, const float* delta, int64_t count, cudaStream_t stream) {
  if (count == 0) return absl::OkStatus();
  AddInPlaceKernel<<<BlocksFor(count), kThreads, 0, stream>>>(x, delta, count);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status ToBf16(const float* in, void* out, int64_t count, cudaStream_t stream) {
  if (count == 0) return absl::OkStatus();
  ToBf16Kernel<<<BlocksFor(count), kThreads, 0, stream>>>(in, static_cast<__nv_bfloat16*>(out),
                                                          count);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status GatherRows(const float* x, const int32_t* rows, float* out, int64_t count, int64_t dim,
                        cudaStream_t stream) {
  if (count == 0) return absl::OkStatus();
  GatherRowsKernel<<<static_cast<unsigned>(count), kThreads, 0, stream>>>(x, rows, out, dim);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

}  // namespace gistmem::cuda
