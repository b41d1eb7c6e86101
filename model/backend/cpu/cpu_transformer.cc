#include "model/backend/cpu/cpu_transformer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "model/backend/cpu/ops.h"
#include "model/weights.h"

namespace gistmem::model {
namespace {

std::vector<float> Load(const Checkpoint& ckpt, const std::string& name,
                        const std::vector<int64_t>& shape) {
  return ckpt.Get(name, shape).ToFloat32();
}

std::vector<float> LoadIf(bool present, const Checkpoint& ckpt, const std::string& name,
                          const std::vector<int64_t>& shape) {
  return present ? Load(ckpt, name, shape) : std::vector<float>();
}

const float* OrNull(const std::vector<float>& v) {
  return v.empty() ? nullptr : v.data();
}

}  // namespace

CpuTransformer::CpuTransformer(ModelConfig config, int num_threads)
    : config_(std::move(config)), pool_(num_threads) {
  for (double f : RopeInverseFrequencies(config_))
    inv_freq_.push_back(static_cast<float>(f));
}

std::unique_ptr<CpuTransformer> CpuTransformer::Load(const std::filesystem::path& model_dir,
                                                     int num_threads) {
  ModelConfig config = ModelConfig::FromFile(model_dir / "config.json");
  const Checkpoint ckpt = Checkpoint::Open(model_dir);
  std::unique_ptr<CpuTransformer> model(new CpuTransformer(config, num_threads));
  const int64_t hidden = config.hidden_size, inter = config.intermediate_size;
  const int64_t q_dim = config.q_dim(), kv_dim = config.kv_dim();
  model->embedding_ =
      gistmem::model::Load(ckpt, "model.embed_tokens.weight", {config.vocab_size, hidden});
  model->final_norm_ = gistmem::model::Load(ckpt, "model.norm.weight", {hidden});
  // Tied checkpoints may still carry a copy of lm_head; the tie decides.
  if (!config.tie_word_embeddings) {
    model->lm_head_ = gistmem::model::Load(ckpt, "lm_head.weight", {config.vocab_size, hidden});
  }
  for (int64_t l = 0; l < config.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Layer layer;
    layer.input_norm = gistmem::model::Load(ckpt, p + "input_layernorm.weight", {hidden});
    layer.post_norm = gistmem::model::Load(ckpt, p + "post_attention_layernorm.weight", {hidden});
    layer.q = gistmem::model::Load(ckpt, p + "self_attn.q_proj.weight", {q_dim, hidden});
    layer.k = gistmem::model::Load(ckpt, p + "self_attn.k_proj.weight", {kv_dim, hidden});
    layer.v = gistmem::model::Load(ckpt, p + "self_attn.v_proj.weight", {kv_dim, hidden});
    layer.o = gistmem::model::Load(ckpt, p + "self_attn.o_proj.weight", {hidden, q_dim});
    layer.q_bias = LoadIf(config.qkv_bias, ckpt, p + "self_attn.q_proj.bias", {q_dim});
    layer.k_bias = LoadIf(config.qkv_bias, ckpt, p + "self_attn.k_proj.bias", {kv_dim});
    layer.v_bias = LoadIf(config.qkv_bias, ckpt, p + "self_attn.v_proj.bias", {kv_dim});
    layer.o_bias = LoadIf(config.o_bias, ckpt, p + "self_attn.o_proj.bias", {hidden});
    layer.gate = gistmem::model::Load(ckpt, p + "mlp.gate_proj.weight", {inter, hidden});
    layer.up = gistmem::model::Load(ckpt, p + "mlp.up_proj.weight", {inter, hidden});
    layer.down = gistmem::model::Load(ckpt, p + "mlp.down_proj.weight", {hidden, inter});
    layer.gate_bias = LoadIf(config.mlp_bias, ckpt, p + "mlp.gate_proj.bias", {inter});
    layer.up_bias = LoadIf(config.mlp_bias, ckpt, p + "mlp.up_proj.bias", {inter});
    layer.down_bias = LoadIf(config.mlp_bias, ckpt, p + "mlp.down_proj.bias", {hidden});
    model->layers_.push_back(std::move(layer));
  }
  return model;
}

bool CpuTransformer::Visible(int64_t query_position, int64_t key_position) const {
  if (key_position > query_position) return false;
  return !config_.sliding_window || query_position - key_position < *config_.sliding_window;
}

void CpuTransformer::Validate(const SequenceChunk& chunk) const {
  if (chunk.cache == nullptr) throw std::invalid_argument("forward: chunk without a KV cache");
  if (chunk.tokens.empty()) throw std::invalid_argument("forward: no tokens");
  if (chunk.tokens.size() != chunk.positions.size()) {
    throw std::invalid_argument("forward: " + std::to_string(chunk.tokens.size()) + " tokens but " +
                                std::to_string(chunk.positions.size()) + " positions");
  }
  for (int32_t token : chunk.tokens) {
    if (token < 0 || token >= config_.vocab_size) {
      throw std::invalid_argument("forward: token id " + std::to_string(token) +
                                  " is outside the vocabulary (size " +
                                  std::to_string(config_.vocab_size) + ")");
    }
  }
  int64_t last = chunk.cache->size() == 0 ? -1 : chunk.cache->positions().back();
  for (int64_t p : chunk.positions) {
    if (p <= last) {
      throw std::invalid_argument("forward: position " + std::to_string(p) +
                                  " does not follow position " + std::to_string(last));
    }
    last = p;
  }
}

std::vector<float> CpuTransformer::Forward(std::span<const int32_t> tokens,
                                           std::span<const int64_t> positions, KvCache& cache,
                                           LogitsMode mode) {
  const SequenceChunk chunk{tokens, positions, &cache, mode};
  return std::move(ForwardBatch(std::span(&chunk, 1))[0]);
}

std::vector<std::vector<float>> CpuTransformer::ForwardBatch(
    std::span<const SequenceChunk> chunks) {
  for (const SequenceChunk& chunk : chunks)
    Validate(chunk);
  const int64_t hidden = config_.hidden_size, inter = config_.intermediate_size;
  const int64_t q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
  const float eps = static_cast<float>(config_.rms_norm_eps);

  // Rows of all chunks, stacked: chunk c owns rows [row_offsets[c], row_offsets[c + 1]).
  std::vector<int64_t> row_offsets{0}, cache_bases, all_positions;
  std::vector<int32_t> all_tokens;
  for (const SequenceChunk& chunk : chunks) {
    cache_bases.push_back(chunk.cache->size());
    chunk.cache->Extend(chunk.positions);
    all_tokens.insert(all_tokens.end(), chunk.tokens.begin(), chunk.tokens.end());
    all_positions.insert(all_positions.end(), chunk.positions.begin(), chunk.positions.end());
    row_offsets.push_back(static_cast<int64_t>(all_tokens.size()));
  }
  const int64_t rows = static_cast<int64_t>(all_tokens.size());

  std::vector<float> x(rows * hidden), h(rows * hidden), q(rows * q_dim), k(rows * kv_dim),
      v(rows * kv_dim), attn(rows * q_dim), gate(rows * inter), up(rows * inter);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(&embedding_[all_tokens[r] * hidden], hidden, &x[r * hidden]);
  }
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const Layer& layer = layers_[l];
    RmsNorm(x.data(), layer.input_norm.data(), h.data(), rows, hidden, eps);
    Linear(h.data(), layer.q.data(), OrNull(layer.q_bias), q.data(), rows, hidden, q_dim);
    Linear(h.data(), layer.k.data(), OrNull(layer.k_bias), k.data(), rows, hidden, kv_dim);
    Linear(h.data(), layer.v.data(), OrNull(layer.v_bias), v.data(), rows, hidden, kv_dim);
    ApplyRope(q.data(), all_positions, config_.num_heads, config_.head_dim, inv_freq_);
    ApplyRope(k.data(), all_positions, config_.num_kv_heads, config_.head_dim, inv_freq_);
    for (size_t c = 0; c < chunks.size(); ++c) {
      for (int64_t r = row_offsets[c]; r < row_offsets[c + 1]; ++r) {
        const int64_t entry = cache_bases[c] + (r - row_offsets[c]);
        std::copy_n(&k[r * kv_dim], kv_dim, chunks[c].cache->MutableKeys(l, entry));
        std::copy_n(&v[r * kv_dim], kv_dim, chunks[c].cache->MutableValues(l, entry));
      }
    }
    Attention(l, chunks, row_offsets, cache_bases, q.data(), attn.data());
    Linear(attn.data(), layer.o.data(), OrNull(layer.o_bias), h.data(), rows, q_dim, hidden);
    for (int64_t i = 0; i < rows * hidden; ++i)
      x[i] += h[i];

    RmsNorm(x.data(), layer.post_norm.data(), h.data(), rows, hidden, eps);
    Linear(h.data(), layer.gate.data(), OrNull(layer.gate_bias), gate.data(), rows, hidden, inter);
    Linear(h.data(), layer.up.data(), OrNull(layer.up_bias), up.data(), rows, hidden, inter);
    SiluMul(gate.data(), up.data(), rows * inter);
    Linear(gate.data(), layer.down.data(), OrNull(layer.down_bias), h.data(), rows, inter, hidden);
    for (int64_t i = 0; i < rows * hidden; ++i)
      x[i] += h[i];
  }

  std::vector<std::vector<float>> logits;
  const float* head = lm_head_.empty() ? embedding_.data() : lm_head_.data();
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t first =
        chunks[c].mode == LogitsMode::kAll ? row_offsets[c] : row_offsets[c + 1] - 1;
    const int64_t count = row_offsets[c + 1] - first;
    RmsNorm(&x[first * hidden], final_norm_.data(), &h[first * hidden], count, hidden, eps);
    std::vector<float> out(count * config_.vocab_size);
    Linear(&h[first * hidden], head, nullptr, out.data(), count, hidden, config_.vocab_size);
    logits.push_back(std::move(out));
  }
  return logits;
}

void CpuTransformer::Attention(int64_t layer_index, std::span<const SequenceChunk> chunks,
                               std::span<const int64_t> row_offsets,
                               std::span<const int64_t> cache_bases, const float* q, float* out) {
  const int64_t heads = config_.num_heads, head_dim = config_.head_dim;
  const int64_t group = heads / config_.num_kv_heads, kv_dim = config_.kv_dim();
  const int64_t q_dim = config_.q_dim();
  const float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  const int64_t rows = row_offsets.back();
  // One task per (row, head); the row tells which chunk (and so which cache) it reads.
  pool_.ParallelFor(rows * heads, [&](int64_t task) {
    const int64_t r = task / heads, head = task % heads;
    size_t c = 0;
    while (row_offsets[c + 1] <= r)
      ++c;
    const KvCache& cache = *chunks[c].cache;
    const int64_t query_position = chunks[c].positions[r - row_offsets[c]];
    const int64_t visible_end = cache_bases[c] + (r - row_offsets[c]) + 1;  // causal by index
    const float* query = q + r * q_dim + head * head_dim;
    const float* keys = cache.keys(layer_index) + (head / group) * head_dim;
    const float* values = cache.values(layer_index) + (head / group) * head_dim;
    std::vector<float> scores(visible_end);
    std::vector<int64_t> seen;
    seen.reserve(visible_end);
    for (int64_t j = 0; j < visible_end; ++j) {
      if (!Visible(query_position, cache.positions()[j])) continue;
      float dot = 0.f;
      for (int64_t d = 0; d < head_dim; ++d)
        dot += query[d] * keys[j * kv_dim + d];
      scores[seen.size()] = dot * scale;
      seen.push_back(j);
    }
    Softmax(scores.data(), static_cast<int64_t>(seen.size()));
    float* result = out + r * q_dim + head * head_dim;
    std::fill_n(result, head_dim, 0.f);
    for (size_t s = 0; s < seen.size(); ++s) {
      const float* value = values + seen[s] * kv_dim;
      for (int64_t d = 0; d < head_dim; ++d)
        result[d] += scores[s] * value[d];
    }
  });
}

}  // namespace gistmem::model
