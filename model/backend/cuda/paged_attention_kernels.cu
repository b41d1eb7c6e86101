// The paged attention kernels on CUDA cores (fp32 math on bf16 K/V tiles in shared memory): the
// exact-fp32 path and the fallback of the tensor-core kernel (paged_attention_mma.cu), which
// keeps this structure (work items over pages, shared K/V tiles, online softmax, split +
// combine). Visible() (paged_attention_device.cuh) gets a shared segment's slots with from =
// INT_MIN, until = INT_MAX here.
#include <cuda_bf16.h>

#include <climits>
#include <cmath>

#include "model/backend/cuda/paged_attention_device.cuh"
#include "model/backend/cuda/paged_attention_plan.h"

namespace gistmem::cuda::attention {
namespace {

__device__ __forceinline__ int64_t RowStart(const memory::PageLayout& layout, int32_t page,
                                            int32_t layer, int32_t kv, int32_t slot) {
  return static_cast<int64_t>(page) * layout.num_layers * 2 * layout.block_size * layout.kv_dim +
         ((static_cast<int64_t>(layer) * 2 + kv) * layout.block_size + slot) * layout.kv_dim;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// kDims: consecutive head dimensions per lane in P.V (head_dim <= 32 * kDims); kQueries: query
// vectors per warp. head_dim is a multiple of 8 (16-byte loads).
// Shared memory: K tile [kTileSlots][head_dim + 2] bf16 (the 2 pad make a row an odd number of
// 4-byte words, so the 32 lanes reading 32 different rows hit 32 banks), V tile
// [kTileSlots][head_dim] bf16, rotated queries [kWarps * kQueries][head_dim] fp32, and the
// tile's slot positions and visibility.
template <int kDims, int kQueries>
__global__ void __launch_bounds__(kWarps * 32)
    AttentionKernel(KernelParams p, const WorkItem* items) {
  const WorkItem item = items[blockIdx.x];
  const SequenceDesc seq = p.sequences[item.sequence];
  const int hd = p.head_dim, half = hd / 2, words = hd / 2;
  const int k_stride_words = words + 1;
  const int group = p.num_heads / p.num_kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  extern __shared__ __align__(16) char smem[];
  uint32_t* k_tile = reinterpret_cast<uint32_t*>(smem);
  uint32_t* v_tile = k_tile + kTileSlots * k_stride_words;
  float* q_rot = reinterpret_cast<float*>(v_tile + kTileSlots * words);
  int32_t* slot_position = reinterpret_cast<int32_t*>(q_rot + kWarps * kQueries * hd);
  int32_t* slot_from = slot_position + kTileSlots;
  int32_t* slot_until = slot_from + kTileSlots;

  // This warp's query vectors.
  const int total_qvecs = seq.num_rows * group;
  bool valid[kQueries];
  int row[kQueries], head[kQueries], qpos[kQueries], qclock[kQueries];
  float m[kQueries], l[kQueries], o[kQueries][kDims];
#pragma unroll
  for (int i = 0; i < kQueries; ++i) {
    const int v = item.qvec_begin + warp * kQueries + i;
    valid[i] = v < total_qvecs;
    row[i] = seq.first_row + (valid[i] ? v / group : 0);
    head[i] = item.kv_head * group + (valid[i] ? v % group : 0);
    qpos[i] = valid[i] ? p.positions[row[i]] : 0;
    qclock[i] = valid[i] ? p.clocks[row[i]] : 0;
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int t = 0; t < kDims; ++t)
      o[i][t] = 0.f;
  }

  const __nv_bfloat16* pool = static_cast<const __nv_bfloat16*>(p.pool);
  const int bs = p.layout.block_size;
  int seg_begin = 0;
  for (int s = 0; s < seq.num_segments; ++s) {
    const memory::KvSegmentView seg = p.segments[seq.segment_begin + s];
    const int seg_end = seg_begin + seg.num_slots;
    const int lo = max(item.kv_begin, seg_begin), hi = min(item.kv_end, seg_end);
    if (lo >= hi) {
      seg_begin = seg_end;
      continue;
    }
    // This segment's query: as given, or rotated back by rope_offset for a shared segment.
    // Lanes of this warp may still be reading the previous segment's query (no barrier since).
    __syncwarp();
#pragma unroll
    for (int i = 0; i < kQueries; ++i) {
      if (!valid[i]) continue;
      const float* q = p.q + static_cast<int64_t>(row[i]) * p.q_stride + head[i] * hd;
      float* dst = q_rot + (warp * kQueries + i) * hd;
      for (int d = lane; d < half; d += 32) {
        const float a = q[d], b = q[d + half];
        if (seg.shared) {
          float sn, cs;
          sincosf(static_cast<float>(-seg.rope_offset) * p.inv_freq[d], &sn, &cs);
          dst[d] = a * cs - b * sn;
          dst[d + half] = b * cs + a * sn;
        } else {
          dst[d] = a;
          dst[d + half] = b;
        }
      }
    }
    __syncwarp();

    for (int t0 = lo; t0 < hi; t0 += kTileSlots) {
      const int n = min(kTileSlots, hi - t0);
      __syncthreads();  // every warp is done with the previous tile
      // 16-byte loads (8 bf16): a head's row is head_dim / 8 of them.
      const int chunks = hd / 8;
      for (int idx = threadIdx.x; idx < n * chunks; idx += blockDim.x) {
        const int j = idx / chunks, c = idx % chunks;
        const int local = t0 - seg_begin + j;
        const int page = seg.page_ids[local / bs], slot = local % bs;
        const int64_t base = item.kv_head * hd + 8 * c;
        const uint4 k = *reinterpret_cast<const uint4*>(
            pool + RowStart(p.layout, page, p.layer, 0, slot) + base);
        const uint4 v = *reinterpret_cast<const uint4*>(
            pool + RowStart(p.layout, page, p.layer, 1, slot) + base);
        uint32_t* k_dst = k_tile + j * k_stride_words + 4 * c;  // odd row stride: 4 stores
        k_dst[0] = k.x;
        k_dst[1] = k.y;
        k_dst[2] = k.z;
        k_dst[3] = k.w;
        *reinterpret_cast<uint4*>(v_tile + j * words + 4 * c) = v;
      }
      for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const int local = t0 - seg_begin + j;
        if (seg.shared) {
          slot_position[j] = INT_MIN;
          slot_from[j] = INT_MIN;
          slot_until[j] = INT_MAX;
        } else {
          slot_position[j] = seg.positions[local];
          slot_from[j] = seg.visible_from[local];
          slot_until[j] = seg.visible_until[local];
        }
      }
      __syncthreads();

#pragma unroll
      for (int i = 0; i < kQueries; ++i) {
        if (!valid[i]) continue;  // warp-uniform
        const float2* q2 = reinterpret_cast<const float2*>(q_rot + (warp * kQueries + i) * hd);
        float score[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int j = lane + 32 * c;
          score[c] = -INFINITY;
          if (j >= n) continue;
          const int kp = slot_position[j];
          const bool visible =
              (seg.shared ||
               (kp <= qpos[i] && (p.sliding_window == 0 || qpos[i] - kp < p.sliding_window))) &&
              slot_from[j] <= qclock[i] && qclock[i] <= slot_until[j];
          if (!visible) continue;
          const uint32_t* k_row = k_tile + j * k_stride_words;
          // Four independent partial sums: a single chain would wait on each FMA's latency.
          float dot[4] = {0.f, 0.f, 0.f, 0.f};
          for (int w = 0; w < words; w += 2) {  // words is a multiple of 4 (head_dim % 8 == 0)
            const float2 k0 =
                __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(k_row + w));
            const float2 k1 =
                __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(k_row + w + 1));
            const float2 q0 = q2[w], q1 = q2[w + 1];
            dot[0] = fmaf(q0.x, k0.x, dot[0]);
            dot[1] = fmaf(q0.y, k0.y, dot[1]);
            dot[2] = fmaf(q1.x, k1.x, dot[2]);
            dot[3] = fmaf(q1.y, k1.y, dot[3]);
          }
          score[c] = ((dot[0] + dot[1]) + (dot[2] + dot[3])) * p.scale;
        }
        const float m_new = fmaxf(m[i], WarpMax(fmaxf(score[0], score[1])));
        if (m_new == -INFINITY) continue;        // nothing visible yet
        const float alpha = expf(m[i] - m_new);  // 0 when m was -inf
        const float p0 = score[0] == -INFINITY ? 0.f : expf(score[0] - m_new);
        const float p1 = score[1] == -INFINITY ? 0.f : expf(score[1] - m_new);
        l[i] = l[i] * alpha + WarpSum(p0 + p1);
        m[i] = m_new;
#pragma unroll
        for (int t = 0; t < kDims; ++t)
          o[i][t] *= alpha;
        // Lane owns kDims consecutive dimensions: one 4- or 8-byte shared load per slot.
        const __nv_bfloat16* v_half = reinterpret_cast<const __nv_bfloat16*>(v_tile);
        const int d0 = lane * kDims;
#pragma unroll 4
        for (int j = 0; j < n; ++j) {
          const float pj = __shfl_sync(0xffffffffu, j < 32 ? p0 : p1, j & 31);
          if (pj == 0.f || d0 >= hd) continue;  // pj: warp-uniform; skips masked slots' data
          const __nv_bfloat16* v = v_half + j * hd + d0;
          if constexpr (kDims == 4) {
            const uint2 raw = *reinterpret_cast<const uint2*>(v);
            const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
            const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
            o[i][0] = fmaf(pj, a.x, o[i][0]);
            o[i][1] = fmaf(pj, a.y, o[i][1]);
            o[i][2] = fmaf(pj, b.x, o[i][2]);
            o[i][3] = fmaf(pj, b.y, o[i][3]);
          } else {
            static_assert(kDims == 2);
            const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(v));
            o[i][0] = fmaf(pj, a.x, o[i][0]);
            o[i][1] = fmaf(pj, a.y, o[i][1]);
          }
        }
      }
    }
    seg_begin = seg_end;
  }

#pragma unroll
  for (int i = 0; i < kQueries; ++i) {
    if (!valid[i]) continue;
    const float inverse = l[i] > 0.f ? 1.f / l[i] : 0.f;
    float* dst;
    if (item.num_splits == 1) {
      dst = p.out + static_cast<int64_t>(row[i]) * p.num_heads * hd + head[i] * hd;
    } else {
      const int64_t partial = item.partial_base +
                              static_cast<int64_t>(warp * kQueries + i) * item.num_splits +
                              item.split;
      dst = p.partial_o + partial * hd;
      if (lane == 0) {
        p.partial_ml[2 * partial] = m[i];
        p.partial_ml[2 * partial + 1] = l[i];
      }
    }
    if (lane * kDims < hd) {
#pragma unroll
      for (int t = 0; t < kDims; ++t)
        dst[lane * kDims + t] = o[i][t] * inverse;
    }
  }
}

// One warp per (row, head): out = sum_s w_s o_s / sum_s w_s with w_s = l_s exp(m_s - max m).
__global__ void CombineKernel(KernelParams p, const CombineEntry* entries, int64_t count) {
  const int64_t e = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  if (e >= count) return;
  const int lane = threadIdx.x % 32;
  const CombineEntry entry = entries[e];
  float max_m = -INFINITY;
  for (int s = 0; s < entry.num_splits; ++s)
    max_m = fmaxf(max_m, p.partial_ml[2 * (entry.partial_begin + s)]);
  float* out =
      p.out + static_cast<int64_t>(entry.row) * p.num_heads * p.head_dim + entry.head * p.head_dim;
  for (int d = lane; d < p.head_dim; d += 32) {
    float sum = 0.f, weight_sum = 0.f;
    for (int s = 0; s < entry.num_splits; ++s) {
      const int64_t partial = entry.partial_begin + s;
      const float ms = p.partial_ml[2 * partial], ls = p.partial_ml[2 * partial + 1];
      if (ls == 0.f) continue;
      const float w = ls * expf(ms - max_m);
      sum += w * p.partial_o[partial * p.head_dim + d];
      weight_sum += w;
    }
    out[d] = weight_sum > 0.f ? sum / weight_sum : 0.f;
  }
}

size_t SharedBytes(int head_dim, int queries_per_warp) {
  return sizeof(uint32_t) * (kTileSlots * (head_dim / 2 + 1) + kTileSlots * (head_dim / 2)) +
         sizeof(float) * kWarps * queries_per_warp * head_dim + sizeof(int32_t) * 3 * kTileSlots;
}

template <int kDims, int kQueries>
cudaError_t Launch(const KernelParams& p, const WorkItem* items, int64_t num_items,
                   cudaStream_t stream) {
  const size_t shared = SharedBytes(p.head_dim, kQueries);
  AttentionKernel<kDims, kQueries>
      <<<static_cast<unsigned>(num_items), kWarps * 32, shared, stream>>>(p, items);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchAttention(const KernelParams& params, const WorkItem* items, int64_t num_items,
                            bool decode, cudaStream_t stream) {
  if (num_items == 0) return cudaSuccess;
  // Four instantiations in all: head_dim <= 64 or <= 128, prefill or decode.
  if (params.head_dim <= 64) {
    return decode ? Launch<2, kDecodeQueriesPerWarp>(params, items, num_items, stream)
                  : Launch<2, kPrefillQueriesPerWarp>(params, items, num_items, stream);
  }
  return decode ? Launch<4, kDecodeQueriesPerWarp>(params, items, num_items, stream)
                : Launch<4, kPrefillQueriesPerWarp>(params, items, num_items, stream);
}

cudaError_t LaunchCombine(const KernelParams& params, const CombineEntry* entries,
                          int64_t num_entries, cudaStream_t stream) {
  if (num_entries == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((num_entries + kWarps - 1) / kWarps);
  CombineKernel<<<blocks, kWarps * 32, 0, stream>>>(params, entries, num_entries);
  return cudaGetLastError();
}

}  // namespace gistmem::cuda::attention
