// The CPU reference transformer (fp32) for Llama-family checkpoints: the function that every
// other backend is tested against. Weights are widened to fp32 at load.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "model/backend/cpu/thread_pool.h"
#include "model/config.h"
#include "model/kv_cache.h"

namespace gistmem::model {

enum class LogitsMode { kAll, kLast };

// One sequence's share of a batched forward step.
struct SequenceChunk {
  std::span<const int32_t> tokens;
  std::span<const int64_t> positions;  // strictly increasing, after the cache's last entry
  KvCache* cache = nullptr;
  LogitsMode mode = LogitsMode::kLast;
};

class CpuTransformer {
 public:
  // Loads config.json and the safetensors weights of `model_dir`; num_threads 0 = all cores.
  static std::unique_ptr<CpuTransformer> Load(const std::filesystem::path& model_dir,
                                              int num_threads = 0);

  const ModelConfig& config() const { return config_; }

  // Runs `tokens` after the entries of `cache`, appends their keys and values, and returns
  // logits row-major: [tokens, vocab] for kAll, [1, vocab] for kLast.
  std::vector<float> Forward(std::span<const int32_t> tokens, std::span<const int64_t> positions,
                             KvCache& cache, LogitsMode mode);

  // Several sequences in one step: their rows share every matrix product, attention stays per
  // sequence. Returns one logits block per chunk, equal to what Forward gives it alone.
  std::vector<std::vector<float>> ForwardBatch(std::span<const SequenceChunk> chunks);

 private:
  struct Layer {
    std::vector<float> input_norm, q, k, v, o, q_bias, k_bias, v_bias, o_bias;
    std::vector<float> post_norm, gate, up, down, gate_bias, up_bias, down_bias;
  };

  CpuTransformer(ModelConfig config, int num_threads);
  void Validate(const SequenceChunk& chunk) const;
  void Attention(int64_t layer_index, std::span<const SequenceChunk> chunks,
                 std::span<const int64_t> row_offsets, std::span<const int64_t> cache_bases,
                 const float* q, float* out);
  // The visibility rule of plain causal attention (plus Mistral's sliding window).
  bool Visible(int64_t query_position, int64_t key_position) const;

  ModelConfig config_;
  std::vector<float> inv_freq_;
  std::vector<float> embedding_, final_norm_, lm_head_;  // lm_head_ empty when tied
  std::vector<Layer> layers_;
  ThreadPool pool_;
};

}  // namespace gistmem::model
