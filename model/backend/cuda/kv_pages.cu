#include <cuda_bf16.h>

#include "model/backend/cuda/cuda_status.h"
#include "model/backend/cuda/kernels.h"

namespace gistmem::cuda {
namespace {

// Element offset of (page, layer, kv, slot) in the pool (memory/kv_layout.h).
__device__ __forceinline__ int64_t RowStart(const memory::PageLayout& layout, int32_t page,
                                            int32_t layer, int32_t kv, int32_t slot) {
  return static_cast<int64_t>(page) * layout.num_layers * 2 * layout.block_size * layout.kv_dim +
         ((static_cast<int64_t>(layer) * 2 + kv) * layout.block_size + slot) * layout.kv_dim;
}

// One block per new row; threads stride over kv_dim for K then V.
__global__ void WriteKvKernel(const float* k, const float* v, int64_t stride, const int32_t* pages,
                              const int32_t* slots, __nv_bfloat16* pool, memory::PageLayout layout,
                              int32_t layer) {
  const int64_t r = blockIdx.x;
  __nv_bfloat16* k_row = pool + RowStart(layout, pages[r], layer, 0, slots[r]);
  __nv_bfloat16* v_row = pool + RowStart(layout, pages[r], layer, 1, slots[r]);
  for (int i = threadIdx.x; i < layout.kv_dim; i += blockDim.x) {
    k_row[i] = __float2bfloat16(k[r * stride + i]);
    v_row[i] = __float2bfloat16(v[r * stride + i]);
  }
}

// grid (entries, layers * 2): each block averages one (layer, K|V) row of one entry.
__global__ void PooledMeanKernel(const int32_t* source_offsets, const int32_t* source_pages,
                                 const int32_t* source_slots, const int32_t* dest_pages,
                                 const int32_t* dest_slots, __nv_bfloat16* pool,
                                 memory::PageLayout layout) {
  const int32_t e = blockIdx.x, layer = blockIdx.y / 2, kv = blockIdx.y % 2;
  const int32_t begin = source_offsets[e], end = source_offsets[e + 1];
  const float inverse = end > begin ? 1.f / static_cast<float>(end - begin) : 0.f;
  __nv_bfloat16* dest = pool + RowStart(layout, dest_pages[e], layer, kv, dest_slots[e]);
  for (int i = threadIdx.x; i < layout.kv_dim; i += blockDim.x) {
    float sum = 0.f;
    for (int32_t j = begin; j < end; ++j)
      sum +=
          __bfloat162float(pool[RowStart(layout, source_pages[j], layer, kv, source_slots[j]) + i]);
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
