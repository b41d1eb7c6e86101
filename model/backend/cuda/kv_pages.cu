#include <cuda_bf16.h>

#include "model/backend/cuda/cuda_status.h"
#include "model/backend/cuda/kernel_math.cuh"
#include "model/backend/cuda/kernels.h"

namespace gistmem::cuda {
namespace {

// One block per new row; threads stride over kv_dim for K then V.
__global__ void WriteKvKernel(const float* k, const float* v, int64_t stride, const int32_t* pages,
                              const int32_t* slots, __nv_bfloat16* pool, memory::PageLayout layout,
                              int32_t layer) {
  const int64_t r = blockIdx.x;
  __nv_bfloat16* k_row = pool + PageRowStart(layout, pages[r], layer, 0, slots[r]);
  __nv_bfloat16* v_row = pool + PageRowStart(layout, pages[r], layer, 1, slots[r]);
  for (int i = threadIdx.x; i < layout.kv_dim; i += blockDim.x) {
    k_row[i] = __float2bfloat16(k[r * stride + i]);
    v_row[i] = __float2bfloat16(v[r * stride + i]);
  }
}

// One block per row: RopeKernel's rotation of the q heads (in place) and of the k heads
// (straight into the page, as bf16), and v into its page: ApplyRope twice and WriteKv.
__global__ void RopeWriteKvKernel(float* qkv, int64_t stride, const int32_t* positions,
                                  int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                                  const float* inv_freq, const int32_t* pages, const int32_t* slots,
                                  __nv_bfloat16* pool, memory::PageLayout layout, int32_t layer) {
  const int64_t r = blockIdx.x, half = head_dim / 2;
  float* q = qkv + r * stride;
  const float* k = q + num_heads * head_dim;
  const float* v = k + num_kv_heads * head_dim;
  const float position = static_cast<float>(positions[r]);
  for (int64_t t = threadIdx.x; t < num_heads * half; t += blockDim.x) {
    const int64_t head = t / half, i = t % half;
    float* h = q + head * head_dim;
    RotatePair(h[i], h[i + half], position, inv_freq[i], h[i], h[i + half]);
  }
  __nv_bfloat16* k_row = pool + PageRowStart(layout, pages[r], layer, 0, slots[r]);
  __nv_bfloat16* v_row = pool + PageRowStart(layout, pages[r], layer, 1, slots[r]);
  for (int64_t t = threadIdx.x; t < num_kv_heads * half; t += blockDim.x) {
    const int64_t at = t / half * head_dim + t % half;
    float a, b;
    RotatePair(k[at], k[at + half], position, inv_freq[t % half], a, b);
    k_row[at] = __float2bfloat16(a);
    k_row[at + half] = __float2bfloat16(b);
  }
  for (int i = threadIdx.x; i < layout.kv_dim; i += blockDim.x)
    v_row[i] = __float2bfloat16(v[i]);
}

// grid (entries, layers * 2): each block averages one (layer, K|V) row of one entry.
__global__ void PooledMeanKernel(const int32_t* source_offsets, const int32_t* source_pages,
                                 const int32_t* source_slots, const int32_t* dest_pages,
                                 const int32_t* dest_slots, __nv_bfloat16* pool,
                                 memory::PageLayout layout) {
  const int32_t e = blockIdx.x, layer = blockIdx.y / 2, kv = blockIdx.y % 2;
  const int32_t begin = source_offsets[e], end = source_offsets[e + 1];
  const float inverse = end > begin ? 1.f / static_cast<float>(end - begin) : 0.f;
  __nv_bfloat16* dest = pool + PageRowStart(layout, dest_pages[e], layer, kv, dest_slots[e]);
  for (int i = threadIdx.x; i < layout.kv_dim; i += blockDim.x) {
    float sum = 0.f;
    for (int32_t j = begin; j < end; ++j)
      sum += __bfloat162float(
          pool[PageRowStart(layout, source_pages[j], layer, kv, source_slots[j]) + i]);
    dest[i] = __float2bfloat16(sum * inverse);
  }
}

absl::Status CheckLayout(const memory::PageLayout& layout) {
  if (layout.element_bytes != 2 || layout.block_size <= 0 || layout.kv_dim <= 0 ||
      layout.num_layers <= 0) {
    return absl::InvalidArgumentError(
        "kv pages: the pool must be bf16 (element_bytes 2) with a "
        "positive block_size, kv_dim and num_layers");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteKv(const float* k, const float* v, int64_t stride, const int32_t* pages,
                     const int32_t* slots, int64_t rows, void* pool,
                     const memory::PageLayout& layout, int32_t layer, cudaStream_t stream) {
  GISTMEM_RETURN_IF_ERROR(CheckLayout(layout));
  if (rows == 0) return absl::OkStatus();
  WriteKvKernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(
      k, v, stride, pages, slots, static_cast<__nv_bfloat16*>(pool), layout, layer);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status RopeWriteKv(float* qkv, int64_t stride, const int32_t* positions, int64_t rows,
                         int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                         const float* inv_freq, const int32_t* pages, const int32_t* slots,
                         void* pool, const memory::PageLayout& layout, int32_t layer,
                         cudaStream_t stream) {
  GISTMEM_RETURN_IF_ERROR(CheckLayout(layout));
  if (head_dim % 2 != 0 || layout.kv_dim != num_kv_heads * head_dim) {
    return absl::InvalidArgumentError("rope + write kv: odd head_dim or kv_dim != kv heads * dim");
  }
  if (rows == 0) return absl::OkStatus();
  RopeWriteKvKernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(
      qkv, stride, positions, num_heads, num_kv_heads, head_dim, inv_freq, pages, slots,
      static_cast<__nv_bfloat16*>(pool), layout, layer);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

absl::Status PooledMean(const int32_t* source_offsets, const int32_t* source_pages,
                        const int32_t* source_slots, const int32_t* dest_pages,
                        const int32_t* dest_slots, int64_t num_entries, void* pool,
                        const memory::PageLayout& layout, cudaStream_t stream) {
  GISTMEM_RETURN_IF_ERROR(CheckLayout(layout));
  if (num_entries == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>(num_entries), static_cast<unsigned>(layout.num_layers * 2));
  PooledMeanKernel<<<grid, 128, 0, stream>>>(source_offsets, source_pages, source_slots, dest_pages,
                                             dest_slots, static_cast<__nv_bfloat16*>(pool), layout);
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  return absl::OkStatus();
}

}  // namespace gistmem::cuda
