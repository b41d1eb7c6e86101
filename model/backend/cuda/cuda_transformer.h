// The GPU transformer for Llama-family checkpoints (Llama, Qwen2 with q/k/v biases and tied
// embeddings, Mistral with a sliding window): bf16 weights, fp32 residual stream and
// accumulation, K/V in a paged bf16 pool laid out as memory/kv_layout.h says.
//
// A forward step runs a batch of sequences, each a chunk of new rows (a prefill or one decode
// token, or anything between) after whatever its KV view already holds:
//
//   absl::StatusOr<std::unique_ptr<CudaTransformer>> model = CudaTransformer::Load(dir);
//   absl::StatusOr<KvPagePool> pool = KvPagePool::Allocate((*model)->PageLayoutFor(16), pages);
//   CudaSequenceStep step{.tokens = ..., .positions = ..., .clocks = ...,
//                         .kv_pages = ..., .kv_slots = ..., .kv = view, .logits_rows = {}};
//   absl::StatusOr<std::vector<float>> logits = (*model)->Forward({&step, 1}, *pool);
//
// How a step maps to memory/kv_layout.h (the caller, i.e. the session KV, owns all of it):
//   - Reserve a (page, slot) for every new row and add the slot to the sequence's segments
//     BEFORE the call, with its position, visible_from and visible_until: `kv` describes the KV
//     after the step. Row i's K and V are written to (kv_pages[i], kv_slots[i]) in every layer,
//     then attention reads them back through `kv` like any other slot; causality inside the
//     chunk comes from positions[i] <= p, so the rows' slots need no particular order.
//   - `kv.segments` is a HOST array of KvSegmentView; the arrays each segment points to
//     (page_ids, positions, visible_from, visible_until) are DEVICE memory (DeviceKvViews
//     uploads host arrays when the caller keeps none on the device).
//   - Each row's raw clock is compared with visible_from / visible_until; the model's sliding
//     window (Mistral) is applied on top of the positions.
//   - Pooled entries (the `pool` policy): write them with PooledMean (kernels.h) between steps;
//     they are ordinary slots to attention.
//
// Small steps (decode) run as CUDA graphs (step_graphs.h): from the second step of a shape on,
// the whole launch sequence (every layer, the final norm, the LM head) is one graph launch
// after the step's per-row arrays and attention plan are uploaded. Larger steps (prefill,
// above kMaxGraphRows rows) launch eagerly. Replays compute exactly what eager launches do.
//
// Thread-safety: Forward calls on one object take turns (a mutex); the pool must not be written
// by anyone else while a step runs. Load and Forward never throw: failures are Status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/kv_layout.h"
#include "model/backend/cuda/cuda_weights.h"
#include "model/backend/cuda/device_buffer.h"
#include "model/backend/cuda/gemm.h"
#include "model/backend/cuda/paged_attention.h"
#include "model/backend/cuda/step_graphs.h"
#include "model/config.h"

namespace gistmem::cuda {

// N pages of `layout` (bf16) in one device allocation. Allocate gives RESOURCE_EXHAUSTED with
// the bytes asked for when the GPU has too little free memory; INVALID_ARGUMENT for a layout
// that is not bf16 or a negative page count. Contents start undefined.
class KvPagePool {
 public:
  static absl::StatusOr<KvPagePool> Allocate(const memory::PageLayout& layout, int64_t num_pages);
  void* data() const { return buffer_.get(); }
  const memory::PageLayout& layout() const { return layout_; }
  int64_t num_pages() const { return num_pages_; }

 private:
  DeviceBuffer buffer_;
  memory::PageLayout layout_;
  int64_t num_pages_ = 0;
};

// One sequence's share of a forward step. Spans are host memory and need only outlive the call.
struct CudaSequenceStep {
  std::span<const int32_t> tokens;       // [n], n >= 1, each in [0, vocab)
  std::span<const int32_t> positions;    // [n] stream positions (>= 0) of the new rows
  std::span<const int32_t> clocks;       // [n] raw clocks, or empty: every row's clock is 0
  std::span<const int32_t> kv_pages;     // [n] page of row i's new K/V, in [0, pool.num_pages())
  std::span<const int32_t> kv_slots;     // [n] slot in that page, in [0, block_size)
  memory::SequenceKvView kv;             // the sequence's KV including the new rows (see above)
  std::span<const int32_t> logits_rows;  // rows (chunk indices) whose logits come back; empty: last
  bool skip_logits = false;              // no logits for this sequence (logits_rows ignored)
};

class CudaTransformer {
 public:
  // Reads config.json and the safetensors of `model_dir` and uploads the weights.
  // INVALID_ARGUMENT for a config or checkpoint the runtime does not support (the message
  // names the key or tensor), RESOURCE_EXHAUSTED when the weights do not fit, UNIMPLEMENTED
  // for head_dim > 128 or not a multiple of 8, FAILED_PRECONDITION without a usable GPU.
  static absl::StatusOr<std::unique_ptr<CudaTransformer>> Load(
      const std::filesystem::path& model_dir, AttentionOptions attention_options = {});
  ~CudaTransformer();

  const model::ModelConfig& config() const { return config_; }
  // The stream every step runs on: a caller's uploads for a step go here, before Run.
  cudaStream_t stream() const { return stream_; }
  // The pool layout this model reads: bf16, its layers and kv_dim, `block_size` slots a page.
  memory::PageLayout PageLayoutFor(int32_t block_size) const;

  // Runs one step for every sequence of `steps` (each with its own KV view; no two steps may
  // write the same (page, slot)) and returns fp32 logits, row-major [total logits rows, vocab],
  // the steps' logits rows in order. INVALID_ARGUMENT (nothing written) for a malformed step
  // or a pool of another layout; RESOURCE_EXHAUSTED when scratch memory cannot grow; INTERNAL
  // for a CUDA or cuBLASLt failure, after which the new rows' slots hold garbage (the caller
  // drops them, as for a cancelled step).
  absl::StatusOr<std::vector<float>> Forward(std::span<const CudaSequenceStep> steps,
                                             KvPagePool& pool);

  // What Run hands the step's logits to: device memory, [rows, vocab] fp32 row-major (rows may
  // be 0: no sequence asked for any), ready in `stream`'s order. The consumer reads them or
  // queues its work on `stream` before it returns (the next step overwrites them); its status
  // is Run's.
  using LogitsConsumer =
      absl::FunctionRef<absl::Status(const float* logits, int64_t rows, cudaStream_t stream)>;
  // Forward without the copy to the host: the same step, then `consume` on the device logits,
  // under the same lock. Errors as Forward's, or the consumer's.
  absl::Status Run(std::span<const CudaSequenceStep> steps, KvPagePool& pool,
                   LogitsConsumer consume);

  // Steps of at most this many rows run as CUDA graphs (when enabled).
  static constexpr int64_t kMaxGraphRows = 512;
  // On by default; off, every step launches eagerly (the reference the tests compare with).
  void EnableGraphs(bool on);
  StepGraphs::Stats graph_stats();

 private:
  struct Scratch;
  CudaTransformer() = default;
  absl::Status Validate(std::span<const CudaSequenceStep> steps, const KvPagePool& pool) const;
  // Grows the per-step buffers for `rows` and `logits_rows` (to powers of two, so a slowly
  // growing batch moves them, and the graphs reading them, rarely).
  absl::Status ReserveScratch(int64_t rows, int64_t logits_rows);
  // Queues the step's launches after its inputs are on the device: embedding, every layer, the
  // final norm and the LM head (what a graph captures).
  absl::Status Enqueue(int64_t rows, int64_t logits_rows, KvPagePool& pool);
  absl::Status RunLayer(int32_t layer, int64_t rows, KvPagePool& pool);

  model::ModelConfig config_;
  CudaWeights weights_;
  DeviceBuffer inv_freq_;  // fp32 [head_dim / 2]
  std::unique_ptr<Gemm> gemm_;
  std::unique_ptr<PagedAttention> attention_;
  std::unique_ptr<Scratch> scratch_;
  bool graphs_on_ = true;
  StepGraphs graphs_;
  cudaStream_t stream_ = nullptr;
  std::mutex mutex_;
};

}  // namespace gistmem::cuda
