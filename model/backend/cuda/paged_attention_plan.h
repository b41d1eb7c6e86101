// Internal to paged attention: the plain structs the host plan writes and the kernels read,
// and the kernel launchers (paged_attention_kernels.cu). Not part of the backend's API.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memory/kv_layout.h"

namespace gistmem::cuda::attention {

inline constexpr int kWarps = 4;       // per CTA
inline constexpr int kTileSlots = 64;  // KV slots per shared-memory tile (two per lane)
inline constexpr int kPrefillQueriesPerWarp = 4;
inline constexpr int kDecodeQueriesPerWarp = 1;

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
};

// Queries per CTA of each path.
inline constexpr int kPrefillQueries = kWarps * kPrefillQueriesPerWarp;
inline constexpr int kDecodeQueries = kWarps * kDecodeQueriesPerWarp;

cudaError_t LaunchAttention(const KernelParams& params, const WorkItem* items, int64_t num_items,
                            bool decode, cudaStream_t stream);
cudaError_t LaunchCombine(const KernelParams& params, const CombineEntry* entries,
                          int64_t num_entries, cudaStream_t stream);

}  // namespace gistmem::cuda::attention
