// The CPU reference transformer (fp32) for Llama-family checkpoints (Llama, Qwen2, Mistral),
// computed as transformers computes them: the function every other backend is tested against.
// Weights are widened to fp32 at load. OpenBLAS threads the matrix products; attention runs
// on the model's own thread pool.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "model/backend/cpu/attention_mask.h"
#include "model/backend/cpu/cpu_weights.h"
#include "model/backend/cpu/thread_pool.h"
#include "model/config.h"
#include "model/kv_cache.h"

namespace gistmem::model {

// Which rows of a chunk get logits: all, the last, or the one at `logits_row` (the last raw
// token when a gist token follows it in the same chunk).
enum class LogitsMode { kAll, kLast, kRow };

// One sequence's share of a batched forward step.
struct SequenceChunk {
  std::span<const int32_t> tokens;
  std::span<const int64_t> positions;  // strictly increasing, from the cache's next_position()
  KvCache* cache = nullptr;
  LogitsMode mode = LogitsMode::kLast;
  int64_t logits_row = 0;  // for kRow
  // A memory policy's rule (model/kv_cache.h EntryVisibility), or both empty for none: each
  // row's raw clock, and the visibility its new cache entry gets.
  std::span<const int64_t> clocks;
  std::span<const EntryVisibility> visibility;
};

class CpuTransformer {
 public:
  // Loads config.json and the safetensors weights of `model_dir`. num_threads sizes the
  // attention pool (0 = one per hardware thread); OpenBLAS sizes its own threads
  // (OPENBLAS_NUM_THREADS).
  static std::unique_ptr<CpuTransformer> Load(const std::filesystem::path& model_dir,
                                              int num_threads = 0);

  const ModelConfig& config() const { return config_; }

  // Runs `tokens` after the entries of `cache`, appends their keys and values, and returns
  // logits row-major: [tokens, vocab] for kAll, [1, vocab] for kLast. Each token attends to
  // every cache entry the attention mask lets it see, and to the earlier tokens of the chunk.
  // Throws std::invalid_argument (cache untouched) for token ids outside the vocabulary or
  // positions that do not increase past the cache's last one.
  std::vector<float> Forward(std::span<const int32_t> tokens, std::span<const int64_t> positions,
                             KvCache& cache, LogitsMode mode);

  // Several sequences (distinct caches) in one step: one pass over the layers, but each chunk's
  // matrix products and attention run on its own rows. Returns one logits block per chunk, bit
  // for bit what Forward gives it alone (continuous batching relies on it: BLAS results for a
  // row change with the rows sharing the product). Calls from several threads take turns.
  std::vector<std::vector<float>> ForwardBatch(std::span<const SequenceChunk> chunks);

 private:
  struct Batch;
  struct Activations;

  CpuTransformer(ModelConfig config, CpuWeights weights, int num_threads);

  void Validate(std::span<const SequenceChunk> chunks) const;
  void RunLayer(const CpuLayerWeights& layer, int64_t layer_index, const Batch& batch,
                Activations& a);
  void Attention(int64_t layer_index, const Batch& batch, const float* q, float* out);
  std::vector<std::vector<float>> Logits(const Batch& batch, const float* hidden_states) const;

  ModelConfig config_;
  CpuWeights weights_;
  std::vector<float> inv_freq_;
  AttentionMask mask_;
  ThreadPool pool_;
  std::mutex forward_mutex_;
};

}  // namespace gistmem::model
