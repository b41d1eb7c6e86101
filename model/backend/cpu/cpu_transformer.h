// The CPU reference transformer (fp32) for Llama-family checkpoints (Llama, Qwen2, Mistral),
// computed as transformers computes them: the function every other backend is tested against.
// Weights are widened to fp32 at load. OpenBLAS threads the matrix products; attention runs
// on the model's own thread pool over the KV pages of each sequence (memory/kv_layout.h).
// The CPU engine (cpu_engine.h) wraps it behind model/engine.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "memory/block_pool.h"
#include "model/backend/cpu/attention_mask.h"
#include "model/backend/cpu/cpu_weights.h"
#include "model/backend/cpu/thread_pool.h"
#include "model/config.h"
#include "model/engine.h"

namespace gistmem::model {

class CpuTransformer {
 public:
  // Loads config.json and the safetensors weights of `model_dir`. num_threads sizes the
  // attention pool (0 = one per hardware thread); OpenBLAS sizes its own threads
  // (OPENBLAS_NUM_THREADS). Throws std::runtime_error / std::invalid_argument on a bad
  // checkpoint.
  static std::unique_ptr<CpuTransformer> Load(const std::filesystem::path& model_dir,
                                              int num_threads = 0);

  const ModelConfig& config() const { return config_; }

  // Several sequences (distinct KVs of `pool`, a host fp32 pool of this model's shape) in one
  // step: one pass over the layers, but each sequence's matrix products and attention run on
  // its own rows, so each gets bit for bit what it gets alone (continuous batching relies on
  // it: BLAS results for a row change with the rows sharing the product). Writes each row's
  // K/V at its slot. Throws std::invalid_argument (nothing written) on bad input. Calls from
  // several threads take turns.
  std::vector<std::vector<float>> ForwardBatch(std::span<const SequenceStep> steps,
                                               memory::BlockPool& pool);

 private:
  struct Batch;
  struct Activations;

  CpuTransformer(ModelConfig config, CpuWeights weights, int num_threads);

  void Validate(std::span<const SequenceStep> steps, const memory::BlockPool& pool) const;
  void RunLayer(const CpuLayerWeights& layer, int64_t layer_index, const Batch& batch,
                Activations& a);
  // Attention over the rows Batch::ResolveRows found for the running layer.
  void Attention(const Batch& batch, const float* q, float* out);
  std::vector<std::vector<float>> Logits(const Batch& batch, const float* hidden_states) const;

  ModelConfig config_;
  CpuWeights weights_;
  std::vector<float> inv_freq_;
  AttentionMask mask_;
  ThreadPool pool_;
  std::mutex forward_mutex_;
  memory::PageStorage* pages_ = nullptr;  // the running step's pages, under forward_mutex_
};

}  // namespace gistmem::model
