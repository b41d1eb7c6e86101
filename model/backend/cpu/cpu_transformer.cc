#include "model/backend/cpu/cpu_transformer.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <string>

#include "model/backend/cpu/ops.h"
#include "model/weights.h"

namespace gistmem::model {
namespace {

const float* OrNull(const std::vector<float>& v) {
  return v.empty() ? nullptr : v.data();
}

void AddInPlace(float* x, const float* delta, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    x[i] += delta[i];
}

// y = x * w^T (+ bias), one product per chunk of rows ([offsets[c], offsets[c + 1])).
// OpenBLAS rounds a row differently depending on how many rows share the product and where the
// row sits (its kernels block and thread over rows), so one product over the stacked rows of a
// batch would break ForwardBatch's promise: each chunk gets bit for bit what Forward gives it.
void LinearPerChunk(std::span<const int64_t> offsets, const float* x, const std::vector<float>& w,
                    const std::vector<float>& bias, float* y, int64_t in_dim, int64_t out_dim) {
  for (size_t c = 0; c + 1 < offsets.size(); ++c) {
    Linear(x + offsets[c] * in_dim, w.data(), OrNull(bias), y + offsets[c] * out_dim,
           offsets[c + 1] - offsets[c], in_dim, out_dim);
  }
}

void CheckChunk(const SequenceChunk& chunk, const ModelConfig& config) {
  const KvCache& cache = *chunk.cache;
  if (cache.num_layers() != config.num_layers || cache.kv_dim() != config.kv_dim()) {
    throw std::invalid_argument("forward: the KV cache was made for another model shape");
  }
  if (chunk.tokens.empty()) throw std::invalid_argument("forward: no tokens");
  if (chunk.tokens.size() != chunk.positions.size()) {
    throw std::invalid_argument("forward: " + std::to_string(chunk.tokens.size()) + " tokens but " +
                                std::to_string(chunk.positions.size()) + " positions");
  }
  for (size_t i = 0; i < chunk.tokens.size(); ++i) {
    const int32_t token = chunk.tokens[i];
    if (token < 0 || token >= config.vocab_size) {
      throw std::invalid_argument("forward: token id " + std::to_string(token) + " at index " +
                                  std::to_string(i) + " is outside the vocabulary [0, " +
                                  std::to_string(config.vocab_size) + ")");
    }
  }
  if (config.sliding_window && !cache.shared().empty()) {
    throw std::invalid_argument(
        "forward: attached documents need a model without a sliding window");
  }
  if (chunk.clocks.size() != chunk.visibility.size() ||
      (!chunk.clocks.empty() && chunk.clocks.size() != chunk.tokens.size())) {
    throw std::invalid_argument(
        "forward: clocks and visibility must be given for every row or none");
  }
  if (chunk.mode == LogitsMode::kRow &&
      (chunk.logits_row < 0 || chunk.logits_row >= static_cast<int64_t>(chunk.tokens.size()))) {
    throw std::invalid_argument("forward: logits_row " + std::to_string(chunk.logits_row) +
                                " is outside the chunk");
  }
  int64_t last = cache.next_position() - 1;
  for (size_t i = 0; i < chunk.positions.size(); ++i) {
    const int64_t position = chunk.positions[i];
    if (position <= last) {
      throw std::invalid_argument(
          "forward: position " + std::to_string(position) + " at index " + std::to_string(i) +
          (last < 0 ? " is negative"
                    : " does not follow position " + std::to_string(last) +
                          " (positions must increase past the cache's last entry)"));
    }
    last = position;
  }
}

}  // namespace

// The rows of all chunks of one step, stacked: chunk c owns rows [row_offsets[c],
// row_offsets[c + 1]) and its cache held cache_bases[c] entries before the step.
struct CpuTransformer::Batch {
  std::span<const SequenceChunk> chunks;
  std::vector<int64_t> row_offsets{0};
  std::vector<int64_t> cache_bases;
  std::vector<int32_t> tokens;
  std::vector<int64_t> positions;

  explicit Batch(std::span<const SequenceChunk> batch_chunks) : chunks(batch_chunks) {
    for (const SequenceChunk& chunk : chunks) {
      cache_bases.push_back(chunk.cache->size());
      tokens.insert(tokens.end(), chunk.tokens.begin(), chunk.tokens.end());
      positions.insert(positions.end(), chunk.positions.begin(), chunk.positions.end());
      row_offsets.push_back(static_cast<int64_t>(tokens.size()));
    }
  }
  int64_t rows() const { return row_offsets.back(); }
  size_t ChunkOf(int64_t row) const {
    return std::upper_bound(row_offsets.begin(), row_offsets.end(), row) - row_offsets.begin() - 1;
  }
  // The cache entry that row `row` of chunk `c` fills.
  int64_t EntryOf(size_t c, int64_t row) const { return cache_bases[c] + (row - row_offsets[c]); }
};

// Per-step buffers, [rows, width] each.
struct CpuTransformer::Activations {
  std::vector<float> x, normed, q, k, v, attention, projected, gate, up;

  Activations(const ModelConfig& c, int64_t rows)
      : x(rows * c.hidden_size),
        normed(rows * c.hidden_size),
        q(rows * c.q_dim()),
        k(rows * c.kv_dim()),
        v(rows * c.kv_dim()),
        attention(rows * c.q_dim()),
        projected(rows * c.hidden_size),
        gate(rows * c.intermediate_size),
        up(rows * c.intermediate_size) {}
};

CpuTransformer::CpuTransformer(ModelConfig config, CpuWeights weights, int num_threads)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      mask_{config_.sliding_window},
      pool_(num_threads) {
  // transformers keeps inv_freq in fp32; the angle is formed from that.
  for (double f : RopeInverseFrequencies(config_))
    inv_freq_.push_back(static_cast<float>(f));
}

std::unique_ptr<CpuTransformer> CpuTransformer::Load(const std::filesystem::path& model_dir,
                                                     int num_threads) {
  ModelConfig config = ModelConfig::FromFile(model_dir / "config.json");
  CpuWeights weights = CpuWeights::Load(Checkpoint::Open(model_dir), config);
  return std::unique_ptr<CpuTransformer>(
      new CpuTransformer(std::move(config), std::move(weights), num_threads));
}

void CpuTransformer::Validate(std::span<const SequenceChunk> chunks) const {
  if (chunks.empty()) throw std::invalid_argument("forward: no sequences");
  std::set<const KvCache*> caches;
  for (const SequenceChunk& chunk : chunks) {
    if (chunk.cache == nullptr) throw std::invalid_argument("forward: chunk without a KV cache");
    if (!caches.insert(chunk.cache).second) {
      throw std::invalid_argument("forward: one KV cache appears twice in a batch");
    }
    CheckChunk(chunk, config_);
  }
}

std::vector<float> CpuTransformer::Forward(std::span<const int32_t> tokens,
                                           std::span<const int64_t> positions, KvCache& cache,
                                           LogitsMode mode) {
  SequenceChunk chunk;
  chunk.tokens = tokens;
  chunk.positions = positions;
  chunk.cache = &cache;
  chunk.mode = mode;
  return std::move(ForwardBatch(std::span(&chunk, 1))[0]);
}

std::vector<std::vector<float>> CpuTransformer::ForwardBatch(
    std::span<const SequenceChunk> chunks) {
  std::lock_guard lock(forward_mutex_);
  Validate(chunks);
  const Batch batch(chunks);
  try {
    for (const SequenceChunk& chunk : chunks)
      chunk.cache->Extend(chunk.positions, chunk.visibility);
    const int64_t hidden = config_.hidden_size;
    Activations a(config_, batch.rows());
    for (int64_t r = 0; r < batch.rows(); ++r) {
      std::copy_n(&weights_.embedding[batch.tokens[r] * hidden], hidden, &a.x[r * hidden]);
    }
    for (int64_t l = 0; l < config_.num_layers; ++l)
      RunLayer(weights_.layers[l], l, batch, a);
    return Logits(batch, a.x.data());
  } catch (...) {
    // A failed step leaves no half-written entries behind.
    for (size_t c = 0; c < chunks.size(); ++c)
      chunks[c].cache->Truncate(batch.cache_bases[c]);
    throw;
  }
}

void CpuTransformer::RunLayer(const CpuLayerWeights& w, int64_t layer_index, const Batch& batch,
                              Activations& a) {
  const int64_t rows = batch.rows(), hidden = config_.hidden_size;
  const int64_t inter = config_.intermediate_size;
  const int64_t q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
  const float eps = static_cast<float>(config_.rms_norm_eps);

  // Attention block.
  RmsNorm(a.x.data(), w.input_norm.data(), a.normed.data(), rows, hidden, eps);
  LinearPerChunk(batch.row_offsets, a.normed.data(), w.q, w.q_bias, a.q.data(), hidden, q_dim);
  LinearPerChunk(batch.row_offsets, a.normed.data(), w.k, w.k_bias, a.k.data(), hidden, kv_dim);
  LinearPerChunk(batch.row_offsets, a.normed.data(), w.v, w.v_bias, a.v.data(), hidden, kv_dim);
  ApplyRope(a.q.data(), batch.positions, config_.num_heads, config_.head_dim, inv_freq_);
  ApplyRope(a.k.data(), batch.positions, config_.num_kv_heads, config_.head_dim, inv_freq_);
  for (size_t c = 0; c < batch.chunks.size(); ++c) {
    KvCache& cache = *batch.chunks[c].cache;
    for (int64_t r = batch.row_offsets[c]; r < batch.row_offsets[c + 1]; ++r) {
      std::copy_n(&a.k[r * kv_dim], kv_dim, cache.MutableKeys(layer_index, batch.EntryOf(c, r)));
      std::copy_n(&a.v[r * kv_dim], kv_dim, cache.MutableValues(layer_index, batch.EntryOf(c, r)));
    }
  }
  Attention(layer_index, batch, a.q.data(), a.attention.data());
  LinearPerChunk(batch.row_offsets, a.attention.data(), w.o, w.o_bias, a.projected.data(), q_dim,
                 hidden);
  AddInPlace(a.x.data(), a.projected.data(), rows * hidden);

  // MLP block: down(silu(gate(x)) * up(x)).
  RmsNorm(a.x.data(), w.post_attention_norm.data(), a.normed.data(), rows, hidden, eps);
  LinearPerChunk(batch.row_offsets, a.normed.data(), w.gate, w.gate_bias, a.gate.data(), hidden,
                 inter);
  LinearPerChunk(batch.row_offsets, a.normed.data(), w.up, w.up_bias, a.up.data(), hidden, inter);
  SiluMul(a.gate.data(), a.up.data(), rows * inter);
  LinearPerChunk(batch.row_offsets, a.gate.data(), w.down, w.down_bias, a.projected.data(), inter,
                 hidden);
  AddInPlace(a.x.data(), a.projected.data(), rows * hidden);
}

void CpuTransformer::Attention(int64_t layer_index, const Batch& batch, const float* q,
                               float* out) {
  const int64_t heads = config_.num_heads, head_dim = config_.head_dim;
  const int64_t group = heads / config_.num_kv_heads;
  const int64_t q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  const int64_t rows = batch.rows();
  // One task per (head, row); consecutive tasks share a head, so its keys stay in cache.
  pool_.ParallelFor(heads * rows, [&](int64_t task) {
    const int64_t head = task / rows, row = task % rows;
    const size_t c = batch.ChunkOf(row);
    const KvCache& cache = *batch.chunks[c].cache;
    const std::vector<int64_t>& key_positions = cache.positions();
    const std::vector<EntryVisibility>& key_visibility = cache.visibility();
    const int64_t query_position = batch.positions[row];
    const SequenceChunk& chunk = batch.chunks[c];
    const bool clocked = !chunk.clocks.empty();
    const int64_t clock = clocked ? chunk.clocks[row - batch.row_offsets[c]] : 0;
    // Candidates: the entries before the chunk, then the chunk's rows up to this one.
    const int64_t candidates = batch.EntryOf(c, row) + 1;
    thread_local std::vector<int64_t> visible;
    thread_local std::vector<float> weights;
    visible.clear();
    for (int64_t j = 0; j < candidates; ++j) {
      if (!mask_.Visible(query_position, key_positions[j])) continue;
      if (clocked && !key_visibility[j].VisibleAt(clock)) continue;
      visible.push_back(j);
    }
    const int64_t kv_offset = (head / group) * head_dim;  // grouped-query attention
    const float* query = q + row * q_dim + head * head_dim;
    float* result = out + row * q_dim + head * head_dim;
    if (cache.shared().empty()) {
      weights.resize(visible.size());
      AttendOneHead(query, cache.keys(layer_index) + kv_offset,
                    cache.values(layer_index) + kv_offset, kv_dim, visible, head_dim, scale,
                    weights.data(), result);
      return;
    }
    // Attached segments: every entry is visible; the query is rotated back by the segment's
    // offset so that the relative rotation is what it would be at the segment's positions.
    thread_local std::vector<const float*> keys, values;
    thread_local std::vector<float> rotated;
    keys.clear();
    values.clear();
    for (int64_t j : visible) {
      keys.push_back(cache.keys(layer_index) + j * kv_dim + kv_offset);
      values.push_back(cache.values(layer_index) + j * kv_dim + kv_offset);
    }
    const size_t own = keys.size();
    rotated.assign((cache.shared().size() + 1) * head_dim, 0.f);
    std::copy_n(query, head_dim, rotated.begin());
    std::vector<size_t> query_of(own, 0);
    for (size_t s = 0; s < cache.shared().size(); ++s) {
      const SharedSegment& segment = cache.shared()[s];
      float* shifted = rotated.data() + (s + 1) * head_dim;
      std::copy_n(query, head_dim, shifted);
      const int64_t back[] = {-segment.position_offset};
      ApplyRope(shifted, back, 1, head_dim, inv_freq_);
      const KvCache& doc = *segment.entries;
      for (int64_t j = 0; j < doc.size(); ++j) {
        keys.push_back(doc.keys(layer_index) + j * kv_dim + kv_offset);
        values.push_back(doc.values(layer_index) + j * kv_dim + kv_offset);
        query_of.push_back(s + 1);
      }
    }
    weights.resize(keys.size());
    for (size_t j = 0; j < keys.size(); ++j)
      weights[j] = Dot(rotated.data() + query_of[j] * head_dim, keys[j], head_dim) * scale;
    Softmax(weights.data(), static_cast<int64_t>(weights.size()));
    std::fill_n(result, head_dim, 0.f);
    for (size_t j = 0; j < keys.size(); ++j) {
      for (int64_t d = 0; d < head_dim; ++d)
        result[d] += weights[j] * values[j][d];
    }
  });
}

std::vector<std::vector<float>> CpuTransformer::Logits(const Batch& batch,
                                                       const float* hidden_states) const {
  const int64_t hidden = config_.hidden_size, vocab = config_.vocab_size;
  // The wanted rows of every chunk, gathered; the vocabulary projection runs per chunk (see
  // LinearPerChunk).
  std::vector<int64_t> first_wanted;
  std::vector<float> wanted;
  for (size_t c = 0; c < batch.chunks.size(); ++c) {
    const SequenceChunk& chunk = batch.chunks[c];
    int64_t first = batch.row_offsets[c + 1] - 1, end = batch.row_offsets[c + 1];
    if (chunk.mode == LogitsMode::kAll) first = batch.row_offsets[c];
    if (chunk.mode == LogitsMode::kRow) {
      first = batch.row_offsets[c] + chunk.logits_row;
      end = first + 1;
    }
    first_wanted.push_back(static_cast<int64_t>(wanted.size()) / hidden);
    wanted.insert(wanted.end(), hidden_states + first * hidden, hidden_states + end * hidden);
  }
  const int64_t rows = static_cast<int64_t>(wanted.size()) / hidden;
  first_wanted.push_back(rows);
  RmsNorm(wanted.data(), weights_.final_norm.data(), wanted.data(), rows, hidden,
          static_cast<float>(config_.rms_norm_eps));
  std::vector<float> logits(rows * vocab);
  for (size_t c = 0; c < batch.chunks.size(); ++c) {
    Linear(wanted.data() + first_wanted[c] * hidden, weights_.output_projection(), nullptr,
           logits.data() + first_wanted[c] * vocab, first_wanted[c + 1] - first_wanted[c], hidden,
           vocab);
  }

  std::vector<std::vector<float>> per_chunk;
  if (batch.chunks.size() == 1) {
    per_chunk.push_back(std::move(logits));  // no copy of a possibly large block
    return per_chunk;
  }
  for (size_t c = 0; c < batch.chunks.size(); ++c) {
    per_chunk.emplace_back(logits.begin() + first_wanted[c] * vocab,
                           logits.begin() + first_wanted[c + 1] * vocab);
  }
  return per_chunk;
}

}  // namespace gistmem::model
