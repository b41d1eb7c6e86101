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
// Two paths, picked per sequence by its row count: a prefill path (many query vectors = rows x
// heads of one KV head group per CTA share each 64-slot K/V tile, flash-style online softmax)
// and a decode path (few query vectors per CTA). Both split the KV length across CTAs when the
// batch alone would not fill the GPU (flash-decoding: per-split results, then a combine
// kernel), so one long sequence still uses every multiprocessor.
//
// Two kernels (AttentionOptions::kernel), same plan structure:
//   tensor cores (paged_attention_mma.cu): Q.K^T and P.V on mma.sync bf16 with fp32
//     accumulation; the query is rounded to bf16 (after a shared segment's rotation, done in
//     fp32) and so are the softmax weights P for P.V (as FlashAttention does), so outputs
//     differ from exact attention by about 2^-9 max|V| at most. Needs head_dim % 16 == 0.
//     K/V tiles come in through a three-stage cp.async ring; tiles no query of a CTA can see
//     (by per-tile position/visibility bounds the plan computes) are never loaded.
//   CUDA cores (paged_attention_kernels.cu): fp32 products of the fp32 query with the bf16
//     K/V (1e-6-level agreement with a float64 reference); head_dim % 8 == 0.
//
// Thread-safety: not thread-safe (one plan at a time); use one object per stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/kv_layout.h"
#include "model/backend/cuda/device_buffer.h"

namespace gistmem::cuda {

struct AttentionShape {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;    // divides num_heads (grouped-query attention)
  int32_t head_dim = 0;        // a multiple of 8 (16 for tensor cores), at most 128
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
  float* out = nullptr;  // [rows, num_heads * head_dim] fp32 (16-byte aligned for tensor cores)
};

enum class AttentionKernel {
  // Tensor cores when head_dim % 16 == 0 (and <= 128), else CUDA cores. The environment
  // variable GISTMEM_ATTENTION_KERNEL (auto | tensor_cores | cuda_cores), read by Create,
  // overrides any choice for a whole process (A/B runs of the engine without a rebuild).
  kAuto,
  kTensorCores,  // Plan fails (UNIMPLEMENTED) when head_dim % 16 != 0
  kCudaCores,
};
// "auto", "tensor_cores", "cuda_cores".
std::string_view AttentionKernelName(AttentionKernel kernel);
// The inverse of AttentionKernelName; INVALID_ARGUMENT for anything else.
absl::StatusOr<AttentionKernel> ParseAttentionKernel(std::string_view name);

struct AttentionOptions {
  AttentionKernel kernel = AttentionKernel::kAuto;
  // KV slots per split; 0 picks it from the batch and the multiprocessor count. Tests set it
  // small to exercise the split/combine path on short sequences.
  int32_t kv_chunk = 0;
  // Without kv_chunk: split KV lengths until the step has about this many CTAs per
  // multiprocessor (a decode CTA is 4 warps, mostly waiting on its K/V tile loads; with head_dim
  // 128 two tensor-core CTAs fit on a multiprocessor at once, so 4 is two waves).
  int32_t ctas_per_multiprocessor = 4;
  // Sequences with at most this many rows take the decode path.
  int32_t decode_max_rows = 2;
};

class PagedAttention {
 public:
  // INVALID_ARGUMENT when GISTMEM_ATTENTION_KERNEL holds an unknown name.
  static absl::StatusOr<std::unique_ptr<PagedAttention>> Create(AttentionOptions options = {});

  // sequences: host array; each one's `segments` array is host memory, and the arrays a
  // segment points to (page_ids, positions, visible_from, visible_until) are DEVICE memory
  // that must stay valid and unchanged until the last Run of this plan has finished.
  // row_offsets (host, num_sequences + 1 entries): the query rows of sequence s are
  // [row_offsets[s], row_offsets[s + 1]) of the Run's row arrays.
  // INVALID_ARGUMENT on a bad shape or view; UNIMPLEMENTED for a head_dim the chosen kernel
  // cannot run; RESOURCE_EXHAUSTED when scratch cannot grow. With tensor cores it also
  // launches, on `stream`, the kernel that computes the per-tile bounds the skip reads.
  absl::Status Plan(std::span<const memory::SequenceKvView> sequences,
                    std::span<const int32_t> row_offsets, const AttentionShape& shape,
                    cudaStream_t stream);

  // Runs the planned attention for one layer; asynchronous on `stream`; no allocation, no host
  // synchronization (CUDA-graph capturable). INVALID_ARGUMENT when the layout does not fit the
  // plan or `pool` (or, with tensor cores, `out`) is not 16-byte aligned.
  absl::Status Run(const AttentionInputs& inputs, cudaStream_t stream);

  // For tests and logs: CTAs of each path and (row, head) outputs combined from splits.
  int64_t prefill_ctas() const { return num_prefill_items_; }
  int64_t decode_ctas() const { return num_decode_items_; }
  int64_t combined_outputs() const { return num_combine_; }
  // Where the last Plan put its parts in the device plan buffer: Run bakes these offsets into
  // its kernels' parameters, so a CUDA graph captured for one plan layout is wrong for another
  // (one more attached segment moves every later part by a segment's size).
  struct PlanOffsets {
    size_t sequences = 0, items = 0, combine = 0, segment_tiles = 0;
    auto operator<=>(const PlanOffsets&) const = default;
  };
  PlanOffsets plan_offsets() const {
    return {seqs_offset_, items_offset_, combine_offset_, segment_tiles_offset_};
  }
  // The kernel the last Plan chose (kTensorCores or kCudaCores).
  AttentionKernel planned_kernel() const {
    return tensor_cores_ ? AttentionKernel::kTensorCores : AttentionKernel::kCudaCores;
  }

 private:
  explicit PagedAttention(AttentionOptions options, int multiprocessors)
      : options_(options), multiprocessors_(multiprocessors) {}

  AttentionOptions options_;
  int multiprocessors_;
  AttentionShape shape_;
  int32_t num_rows_ = 0;
  bool tensor_cores_ = false;
  int64_t num_prefill_items_ = 0, num_decode_items_ = 0, num_combine_ = 0;
  size_t items_offset_ = 0, seqs_offset_ = 0, combine_offset_ = 0, segment_tiles_offset_ = 0;
  std::vector<char> host_plan_;
  DeviceBuffer plan_;         // segments, sequence descriptors, work items, combine list
  DeviceBuffer partial_o_;    // [partials, head_dim] fp32
  DeviceBuffer partial_ml_;   // [partials] (max, sum) fp32 pairs
  DeviceBuffer tile_bounds_;  // tensor cores: attention::TileBounds of every segment tile
};

}  // namespace gistmem::cuda
