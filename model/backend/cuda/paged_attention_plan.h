// Internal to paged attention: the plain structs the host plan writes and the kernels read,
// and the kernel launchers (CUDA cores: paged_attention_kernels.cu; tensor cores:
// paged_attention_mma.cu; the plan's tile bounds: paged_attention_tiles.cu). Not part of the
// backend's API.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memory/kv_layout.h"

namespace gistmem::cuda::attention {

inline constexpr int kWarps = 4;                  // per CTA, both kernels
inline constexpr int kTileSlots = 64;             // KV slots per shared-memory tile, both kernels
inline constexpr int kPrefillQueriesPerWarp = 4;  // CUDA-core kernel
inline constexpr int kDecodeQueriesPerWarp = 1;   // CUDA-core kernel

// Tensor-core kernel: a prefill CTA's 4 warps own 16 query vectors each (one mma M tile); a
// decode CTA's 4 warps share one 16-vector M tile and split each K/V tile's slots.
inline constexpr int kMmaPrefillQueries = 64;
inline constexpr int kMmaDecodeQueries = 16;
inline constexpr int kMmaMaxHeadDim = 128;  // head_dim: a multiple of 16, at most this

// A 64-slot tile of a segment (slots [64 t, 64 t + 64) counted from the segment's start): the
// range of its slots' positions and visibility. The tensor-core kernel skips a tile when no
// query of its CTA could see any slot by these bounds (conservative: a tile it keeps may
// still be invisible slot by slot). Shared segments have none (all their slots are visible).
struct alignas(16) TileBounds {
  int32_t min_position;
  int32_t max_position;
  int32_t min_visible_from;
  int32_t max_visible_until;
};

// n / divisor for 0 <= n < 2^31 by a multiply and a shift (the page of a slot, in the loads'
// address arithmetic): multiplier = ceil(2^(31 + l) / divisor), l = ceil(log2 divisor).
struct FastDiv {
  int32_t divisor = 1;
  uint32_t multiplier = 0;
  uint32_t shift = 0;

  static FastDiv Make(int32_t d) {
    FastDiv f;
    f.divisor = d;
    if (d > 1) {
      uint32_t l = 0;
      while ((int64_t{1} << l) < d)
        ++l;
      f.multiplier = static_cast<uint32_t>(((uint64_t{1} << (31 + l)) + d - 1) / d);
      f.shift = l - 1;
    }
    return f;
  }
  __host__ __device__ int32_t Div(int32_t n) const {
    if (divisor == 1) return n;
#ifdef __CUDA_ARCH__
    return static_cast<int32_t>(__umulhi(static_cast<uint32_t>(n), multiplier) >> shift);
#else
    return static_cast<int32_t>(((uint64_t{static_cast<uint32_t>(n)} * multiplier) >> 32) >> shift);
#endif
  }
};

// One sequence: its segments are segments[segment_begin, segment_begin + num_segments),
// summed in that order; its query rows are [first_row, first_row + num_rows).
struct SequenceDesc {
  int32_t segment_begin;
  int32_t num_segments;
  int32_t first_row;
  int32_t num_rows;
};

// One CTA's work: query vectors [qvec_begin, qvec_begin + queries per CTA) of one KV head
// group (query vector v = row v / group, head kv_head * group + v % group), against the
// sequence's slots [kv_begin, kv_end) counted across its segments in order. With
// num_splits > 1 it writes per-split partial results at partial_base (+ local query vector *
// num_splits + split) for the combine kernel; else the output directly.
struct WorkItem {
  int32_t sequence;
  int32_t kv_head;
  int32_t qvec_begin;
  int32_t split;
  int32_t num_splits;
  int32_t kv_begin;
  int32_t kv_end;
  int32_t partial_base;
};

// One (row, head) output made from num_splits partials at partial_begin (consecutive).
struct CombineEntry {
  int32_t row;
  int32_t head;
  int32_t partial_begin;
  int32_t num_splits;
};

struct KernelParams {
  const void* pool;
  memory::PageLayout layout;
  int32_t layer;
  int32_t num_heads, num_kv_heads, head_dim, sliding_window;
  float scale;
  const float* q;
  int64_t q_stride;
  const int32_t* positions;
  const int32_t* clocks;
  const float* inv_freq;
  float* out;
  float* partial_o;
  float* partial_ml;
  const memory::KvSegmentView* segments;
  const SequenceDesc* sequences;
  // Tensor-core kernel only: segment i's tiles are tile_bounds[segment_tiles[i] ...].
  const int32_t* segment_tiles;
  const TileBounds* tile_bounds;
  FastDiv block;  // layout.block_size
};

// Queries per CTA of each path (CUDA-core kernel).
inline constexpr int kPrefillQueries = kWarps * kPrefillQueriesPerWarp;
inline constexpr int kDecodeQueries = kWarps * kDecodeQueriesPerWarp;

// CUDA-core kernel.
cudaError_t LaunchAttention(const KernelParams& params, const WorkItem* items, int64_t num_items,
                            bool decode, cudaStream_t stream);
// Tensor-core kernel; params.segment_tiles / tile_bounds must hold LaunchTileBounds' result.
cudaError_t LaunchMmaAttention(const KernelParams& params, const WorkItem* items, int64_t num_items,
                               bool decode, cudaStream_t stream);
// Raises the tensor-core kernels' dynamic shared memory limit on the current device (their
// three-stage K/V ring needs more than the default 48 KB). Host only, no stream work.
cudaError_t PrepareMmaAttention();
// Bounds of every tile of every non-shared segment: segment i's tiles are
// out[segment_tiles[i], segment_tiles[i + 1]) (num_segments + 1 entries, the last one
// num_tiles). `segments` and `segment_tiles` are device arrays.
cudaError_t LaunchTileBounds(const memory::KvSegmentView* segments, const int32_t* segment_tiles,
                             int32_t num_segments, int32_t num_tiles, TileBounds* out,
                             cudaStream_t stream);
// Both kernels: partial results of split work items -> outputs.
cudaError_t LaunchCombine(const KernelParams& params, const CombineEntry* entries,
                          int64_t num_entries, cudaStream_t stream);

}  // namespace gistmem::cuda::attention
