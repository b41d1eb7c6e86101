// Paged attention over memory/kv_layout.h: every query row attends to every segment of its
// sequence, through page tables, with the visibility rule of kv_layout.h.
//
// Plan once per step (host work: which CTA does which rows, heads and KV range; uploads the
// segment descriptors), then Run once per layer (FlashInfer's plan/run split).
//
//   PagedAttention attention = *PagedAttention::Create();
//   GISTMEM_RETURN_IF_ERROR(attention.Plan(sequences, row_offsets, shape, stream));
//   for (layer ...) GISTMEM_RETURN_IF_ERROR(attention.Run({...}, stream));
//
// Visibility, for the query row with stream position p and raw clock c, and slot i of a
// non-shared segment: positions[i] <= p, p - positions[i] < sliding_window (when the model has
// one), and visible_from[i] <= c <= visible_until[i]. Shared segments: every slot is visible
// and the query is rotated by RoPE at position -rope_offset (same inv_freq) before the dot.
// Scores, softmax and accumulation are fp32; K/V are read as bf16 from the pool. A row that
// sees nothing gets zeros (as the CPU reference's Softmax).
//
// Two paths, picked per sequence by its row count: a prefill path (16 query vectors = rows x
// heads of one KV head group per CTA share each 64-slot K/V tile, flash-style online softmax)
// and a decode path (4 query vectors per CTA). Both split the KV length across CTAs when the
// batch alone would not fill the GPU (flash-decoding: per-split results, then a combine
// kernel), so one long sequence still uses every multiprocessor. The K/V loads are 16 bytes wide
// and the inner products run on CUDA cores; a tensor-core (mma) version keeps this structure.
//
// Thread-safety: not thread-safe (one plan at a time); use one object per stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/kv_layout.h"
#include "model/backend/cuda/device_buffer.h"

namespace gistmem::cuda {

struct AttentionShape {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;    // divides num_heads (grouped-query attention)
  int32_t head_dim = 0;        // even, at most 128
  int32_t sliding_window = 0;  // 0: none; else a query sees keys with p - k < sliding_window
};

// What one layer's Run reads. Device pointers unless said otherwise.
struct AttentionInputs {
  const void* pool = nullptr;  // bf16 pages of `layout`
  memory::PageLayout layout;   // element_bytes == 2; kv_dim == num_kv_heads * head_dim
  int32_t layer = 0;
  const float* q = nullptr;  // [rows, q_stride] fp32, heads contiguous from element 0, rotated
  int64_t q_stride = 0;
  const int32_t* positions = nullptr;  // [rows] stream positions of the query rows
  const int32_t* clocks = nullptr;     // [rows] raw clocks of the query rows
  const float* inv_freq = nullptr;     // [head_dim / 2], for shared segments' rotation
  float* out = nullptr;                // [rows, num_heads * head_dim] fp32
};

struct AttentionOptions {
  // KV slots per split; 0 picks it from the batch and the multiprocessor count. Tests set it
  // small to exercise the split/combine path on short sequences.
  int32_t kv_chunk = 0;
  // Without kv_chunk: split KV lengths until the step has about this many CTAs per
  // multiprocessor (a decode CTA is 4 warps, mostly waiting on its K/V tile loads).
  int32_t ctas_per_multiprocessor = 4;
  // Sequences with at most this many rows take the decode path.
  int32_t decode_max_rows = 2;
};

class PagedAttention {
 public:
  static absl::StatusOr<std::unique_ptr<PagedAttention>> Create(AttentionOptions options = {});

  // sequences: host array; each one's `segments` array is host memory, and the arrays a
  // segment points to (page_ids, positions, visible_from, visible_until) are DEVICE memory
  // that must stay valid and unchanged until the last Run of this plan has finished.
  // row_offsets (host, num_sequences + 1 entries): the query rows of sequence s are
  // [row_offsets[s], row_offsets[s + 1]) of the Run's row arrays.
  // INVALID_ARGUMENT on a bad shape or view; RESOURCE_EXHAUSTED when scratch cannot grow.
  absl::Status Plan(std::span<const memory::SequenceKvView> sequences,
                    std::span<const int32_t> row_offsets, const AttentionShape& shape,
                    cudaStream_t stream);

  // Runs the planned attention for one layer; asynchronous on `stream`.
  absl::Status Run(const AttentionInputs& inputs, cudaStream_t stream);

  // For tests and logs: CTAs of each path and (row, head) outputs combined from splits.
  int64_t prefill_ctas() const { return num_prefill_items_; }
  int64_t decode_ctas() const { return num_decode_items_; }
  int64_t combined_outputs() const { return num_combine_; }

 private:
  explicit PagedAttention(AttentionOptions options, int multiprocessors)
      : options_(options), multiprocessors_(multiprocessors) {}

  AttentionOptions options_;
  int multiprocessors_;
  AttentionShape shape_;
  int32_t num_rows_ = 0;
  int64_t num_prefill_items_ = 0, num_decode_items_ = 0, num_combine_ = 0;
  size_t items_offset_ = 0, seqs_offset_ = 0, combine_offset_ = 0;
  std::vector<char> host_plan_;
  DeviceBuffer plan_;        // segments, sequence descriptors, work items, combine list
  DeviceBuffer partial_o_;   // [partials, head_dim] fp32
  DeviceBuffer partial_ml_;  // [partials] (max, sum) fp32 pairs
};

}  // namespace gistmem::cuda
