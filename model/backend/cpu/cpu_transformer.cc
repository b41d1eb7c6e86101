#include "model/backend/cpu/cpu_transformer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
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

// y = x * w^T (+ bias), one product per sequence's rows ([offsets[c], offsets[c + 1])).
// OpenBLAS rounds a row differently depending on how many rows share the product and where the
// row sits (its kernels block and thread over rows), so one product over the stacked rows of a
// batch would break ForwardBatch's promise: each sequence gets bit for bit what it gets alone.
void LinearPerSequence(std::span<const int64_t> offsets, const float* x,
                       const std::vector<float>& w, const std::vector<float>& bias, float* y,
                       int64_t in_dim, int64_t out_dim) {
  for (size_t c = 0; c + 1 < offsets.size(); ++c) {
    Linear(x + offsets[c] * in_dim, w.data(), OrNull(bias), y + offsets[c] * out_dim,
           offsets[c + 1] - offsets[c], in_dim, out_dim);
  }
}

void CheckStep(const SequenceStep& step, const ModelConfig& config, const memory::BlockPool& pool) {
  if (step.kv == nullptr) throw std::invalid_argument("forward: a sequence without a KV");
  if (&step.kv->pool() != &pool) {
    throw std::invalid_argument("forward: the KV was made from another engine's pool");
  }
  if (step.tokens.empty()) throw std::invalid_argument("forward: no tokens");
  if (step.tokens.size() != step.positions.size() || step.tokens.size() != step.slots.size()) {
    throw std::invalid_argument("forward: " + std::to_string(step.tokens.size()) + " tokens but " +
                                std::to_string(step.positions.size()) + " positions and " +
                                std::to_string(step.slots.size()) + " slots");
  }
  for (size_t i = 0; i < step.tokens.size(); ++i) {
    const int32_t token = step.tokens[i];
    if (token < 0 || token >= config.vocab_size) {
      throw std::invalid_argument("forward: token id " + std::to_string(token) + " at index " +
                                  std::to_string(i) + " is outside the vocabulary [0, " +
                                  std::to_string(config.vocab_size) + ")");
    }
  }
  if (config.sliding_window && !step.kv->attached().empty()) {
    throw std::invalid_argument(
        "forward: attached documents need a model without a sliding window");
  }
  if (!step.clocks.empty() && step.clocks.size() != step.tokens.size()) {
    throw std::invalid_argument("forward: clocks must be given for every row or none");
  }
  if (step.mode == LogitsMode::kRow &&
      (step.logits_row < 0 || step.logits_row >= static_cast<int64_t>(step.tokens.size()))) {
    throw std::invalid_argument("forward: logits_row " + std::to_string(step.logits_row) +
                                " is outside the chunk");
  }
  for (size_t i = 0; i < step.positions.size(); ++i) {
    const int64_t position = step.positions[i];
    if (position < 0 || (i > 0 && position <= step.positions[i - 1]) ||
        position >= step.kv->next_position()) {
      throw std::invalid_argument(
          "forward: position " + std::to_string(position) + " at index " + std::to_string(i) +
          " does not follow the earlier rows or lies past the KV's appended slots");
    }
  }
}

}  // namespace

// The rows of all sequences of one step, stacked: sequence c owns rows [row_offsets[c],
// row_offsets[c + 1]); views[view_offsets[c], view_offsets[c + 1]) are its KV segments.
struct CpuTransformer::Batch {
  std::span<const SequenceStep> steps;
  std::vector<int64_t> row_offsets{0};
  std::vector<int32_t> tokens;
  std::vector<int64_t> positions;
  std::vector<int64_t> clocks;
  std::vector<memory::SlotRef> slots;
  std::vector<memory::KvSegmentView> views;
  std::vector<size_t> view_offsets{0};
  // Per view and page, where this layer's K and V rows are: looked up once per layer rather
  // than per slot.
  std::vector<std::vector<const float*>> key_rows, value_rows;

  explicit Batch(std::span<const SequenceStep> batch_steps) : steps(batch_steps) {
    for (const SequenceStep& step : steps) {
      tokens.insert(tokens.end(), step.tokens.begin(), step.tokens.end());
      positions.insert(positions.end(), step.positions.begin(), step.positions.end());
      if (step.clocks.empty()) {
        clocks.insert(clocks.end(), step.tokens.size(), 0);
      } else {
        clocks.insert(clocks.end(), step.clocks.begin(), step.clocks.end());
      }
      slots.insert(slots.end(), step.slots.begin(), step.slots.end());
      row_offsets.push_back(static_cast<int64_t>(tokens.size()));
      step.kv->AppendViews(views);
      view_offsets.push_back(views.size());
    }
    key_rows.resize(views.size());
    value_rows.resize(views.size());
  }
  void ResolveRows(const memory::PageStorage& storage, int32_t layer) {
    const int32_t block = storage.layout().block_size;
    for (size_t v = 0; v < views.size(); ++v) {
      const int32_t pages = (views[v].num_slots + block - 1) / block;
      key_rows[v].resize(pages);
      value_rows[v].resize(pages);
      for (int32_t p = 0; p < pages; ++p) {
        const int32_t page = views[v].page_ids[p];
        key_rows[v][p] = static_cast<const float*>(storage.RowsBase(page, layer, 0));
        value_rows[v][p] = static_cast<const float*>(storage.RowsBase(page, layer, 1));
      }
    }
  }
  int64_t rows() const { return row_offsets.back(); }
  size_t SequenceOf(int64_t row) const {
    return std::upper_bound(row_offsets.begin(), row_offsets.end(), row) - row_offsets.begin() - 1;
  }
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

void CpuTransformer::Validate(std::span<const SequenceStep> steps,
                              const memory::BlockPool& pool) const {
  if (steps.empty()) throw std::invalid_argument("forward: no sequences");
  if (pool.layout().element_bytes != sizeof(float) || pool.tier() != "host" ||
      pool.layout().num_layers != config_.num_layers || pool.layout().kv_dim != config_.kv_dim()) {
    throw std::invalid_argument("forward: the KV pool was made for another model shape or tier");
  }
  std::set<const memory::SessionKv*> kvs;
  for (const SequenceStep& step : steps) {
    CheckStep(step, config_, pool);
    if (!kvs.insert(step.kv).second) {
      throw std::invalid_argument("forward: one KV appears twice in a batch");
    }
  }
}

std::vector<std::vector<float>> CpuTransformer::ForwardBatch(std::span<const SequenceStep> steps,
                                                             memory::BlockPool& pool) {
  std::lock_guard lock(forward_mutex_);
  Validate(steps, pool);
  Batch batch(steps);
  const int64_t hidden = config_.hidden_size;
  Activations a(config_, batch.rows());
  for (int64_t r = 0; r < batch.rows(); ++r) {
    std::copy_n(&weights_.embedding[batch.tokens[r] * hidden], hidden, &a.x[r * hidden]);
  }
  pages_ = &pool.storage();
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    batch.ResolveRows(pool.storage(), static_cast<int32_t>(l));
    RunLayer(weights_.layers[l], l, batch, a);
  }
  return Logits(batch, a.x.data());
}

void CpuTransformer::RunLayer(const CpuLayerWeights& w, int64_t layer_index, const Batch& batch,
                              Activations& a) {
  const int64_t rows = batch.rows(), hidden = config_.hidden_size;
  const int64_t inter = config_.intermediate_size;
  const int64_t q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
  const float eps = static_cast<float>(config_.rms_norm_eps);

  // Attention block.
  RmsNorm(a.x.data(), w.input_norm.data(), a.normed.data(), rows, hidden, eps);
  LinearPerSequence(batch.row_offsets, a.normed.data(), w.q, w.q_bias, a.q.data(), hidden, q_dim);
  LinearPerSequence(batch.row_offsets, a.normed.data(), w.k, w.k_bias, a.k.data(), hidden, kv_dim);
  LinearPerSequence(batch.row_offsets, a.normed.data(), w.v, w.v_bias, a.v.data(), hidden, kv_dim);
  ApplyRope(a.q.data(), batch.positions, config_.num_heads, config_.head_dim, inv_freq_);
  ApplyRope(a.k.data(), batch.positions, config_.num_kv_heads, config_.head_dim, inv_freq_);
  const auto layer = static_cast<int32_t>(layer_index);
  for (int64_t r = 0; r < rows; ++r) {
    const memory::SlotRef slot = batch.slots[r];
    const int64_t offset = int64_t{slot.slot} * kv_dim;
    std::copy_n(&a.k[r * kv_dim], kv_dim,
                static_cast<float*>(pages_->RowsBase(slot.page, layer, 0)) + offset);
    std::copy_n(&a.v[r * kv_dim], kv_dim,
                static_cast<float*>(pages_->RowsBase(slot.page, layer, 1)) + offset);
  }
  Attention(batch, a.q.data(), a.attention.data());
  LinearPerSequence(batch.row_offsets, a.attention.data(), w.o, w.o_bias, a.projected.data(), q_dim,
                    hidden);
  AddInPlace(a.x.data(), a.projected.data(), rows * hidden);

  // MLP block: down(silu(gate(x)) * up(x)).
  RmsNorm(a.x.data(), w.post_attention_norm.data(), a.normed.data(), rows, hidden, eps);
  LinearPerSequence(batch.row_offsets, a.normed.data(), w.gate, w.gate_bias, a.gate.data(), hidden,
                    inter);
  LinearPerSequence(batch.row_offsets, a.normed.data(), w.up, w.up_bias, a.up.data(), hidden,
                    inter);
  SiluMul(a.gate.data(), a.up.data(), rows * inter);
  LinearPerSequence(batch.row_offsets, a.gate.data(), w.down, w.down_bias, a.projected.data(),
                    inter, hidden);
  AddInPlace(a.x.data(), a.projected.data(), rows * hidden);
}

void CpuTransformer::Attention(const Batch& batch, const float* q, float* out) {
  const int64_t heads = config_.num_heads, head_dim = config_.head_dim;
  const int64_t kv_heads = config_.num_kv_heads, group = heads / kv_heads;
  const int64_t q_dim = config_.q_dim();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  const int64_t rows = batch.rows();
  const memory::PageLayout& layout = pages_->layout();
  // One task per (KV head, row): the query heads of a KV head see the same slots (visibility
  // depends on the row alone), so each key and value row is read once for all of them, not
  // once per query head. Consecutive tasks share a KV head, so its keys stay in cache. Every
  // head's scores, softmax and sum are computed as for that head alone (Dot, Softmax,
  // WeightedSums; cpu_ops_test checks them against naive attention).
  pool_.ParallelFor(kv_heads * rows, [&](int64_t task) {
    const int64_t kv_head = task / rows, row = task % rows;
    const size_t c = batch.SequenceOf(row);
    const int64_t query_position = batch.positions[row], clock = batch.clocks[row];
    const int64_t kv_offset = kv_head * head_dim;
    const float* query = q + row * q_dim + kv_head * group * head_dim;  // the group's heads
    // Scores (per head) and value rows of the visible slots, written by index into buffers
    // that only grow (no per-slot push_back: the slot walk is the hot loop of long sessions).
    thread_local std::vector<const float*> values;
    thread_local std::vector<float> rotated, weights;
    size_t slots = 0;
    for (size_t v = batch.view_offsets[c]; v < batch.view_offsets[c + 1]; ++v)
      slots += static_cast<size_t>(batch.views[v].num_slots);
    if (values.size() < slots) values.resize(slots);
    if (weights.size() < slots * group) weights.resize(slots * group);
    size_t n = 0;
    rotated.resize((batch.view_offsets[c + 1] - batch.view_offsets[c]) * group * head_dim);
    // Segments in their fixed order (pinned, window, documents), slots in order: the sum runs
    // in the same order for a live session and for one restored from the store.
    for (size_t v = batch.view_offsets[c]; v < batch.view_offsets[c + 1]; ++v) {
      const memory::KvSegmentView& view = batch.views[v];
      const std::vector<const float*>& key_rows = batch.key_rows[v];
      const std::vector<const float*>& value_rows = batch.value_rows[v];
      const float* segment_query = query;
      if (view.shared && view.num_slots > 0) {
        // An attached document: every entry is visible; the queries are rotated back by the
        // segment's offset so the relative rotation is what it was at its own positions.
        float* shifted = rotated.data() + (v - batch.view_offsets[c]) * group * head_dim;
        std::copy_n(query, group * head_dim, shifted);
        const int64_t back[] = {-view.rope_offset};
        ApplyRope(shifted, back, group, head_dim, inv_freq_);
        segment_query = shifted;
      }
      // Page by page: a page's K (and V) rows of this layer are contiguous, kv_dim apart, and
      // so are consecutive pages of one chunk (memory/block_pool.h). The key row a few ahead is
      // asked for while this one is scored: the products wait on memory, not arithmetic, at
      // long contexts (measured: full 32K turn 1.9x slower without, bench/RESULTS.md).
      const int32_t block = layout.block_size;
      const int64_t kv_dim = layout.kv_dim, run = int64_t{block} * kv_dim;
      constexpr int32_t kAhead = 8;
      for (int32_t first = 0, p = 0; first < view.num_slots; first += block, ++p) {
        const float* keys = key_rows[p] + kv_offset;
        const float* page_values = value_rows[p] + kv_offset;
        const int32_t end = std::min(view.num_slots, first + block);
        const bool next_contiguous =
            first + block >= view.num_slots || key_rows[p + 1] == key_rows[p] + run;
        // Addresses as integers: the row ahead may lie past the segment (a prefetch of it is
        // harmless; forming such a pointer would not be).
        const uintptr_t here = reinterpret_cast<uintptr_t>(keys);
        const uintptr_t there = next_contiguous
                                    ? here + run * sizeof(float)
                                    : reinterpret_cast<uintptr_t>(key_rows[p + 1] + kv_offset);
        for (int32_t i = first; i < end; ++i) {
          const int32_t ahead = i - first + kAhead;
          const uintptr_t ahead_row =
              ahead < block ? here + uintptr_t(ahead) * kv_dim * sizeof(float)
                            : there + uintptr_t(ahead - block) * kv_dim * sizeof(float);
          for (int64_t line = 0; line < head_dim; line += 16)
            __builtin_prefetch(reinterpret_cast<const void*>(ahead_row + line * sizeof(float)));
          if (!view.shared) {
            if (!mask_.Visible(query_position, view.positions[i])) continue;
            if (clock < view.visible_from[i] || clock > view.visible_until[i]) continue;
          }
          const float* key = keys + int64_t{i - first} * kv_dim;
          for (int64_t g = 0; g < group; ++g)
            weights[g * slots + n] = Dot(segment_query + g * head_dim, key, head_dim) * scale;
          values[n] = page_values + int64_t{i - first} * kv_dim;
          ++n;
        }
      }
    }
    thread_local std::vector<const float*> head_weights;
    thread_local std::vector<float*> head_outs;
    head_weights.resize(group);
    head_outs.resize(group);
    for (int64_t g = 0; g < group; ++g) {
      Softmax(weights.data() + g * slots, static_cast<int64_t>(n));
      head_weights[g] = weights.data() + g * slots;
      head_outs[g] = out + row * q_dim + (kv_head * group + g) * head_dim;
    }
    WeightedSums(head_weights, std::span(values.data(), n), head_dim, head_outs);
  });
}

std::vector<std::vector<float>> CpuTransformer::Logits(const Batch& batch,
                                                       const float* hidden_states) const {
  const int64_t hidden = config_.hidden_size, vocab = config_.vocab_size;
  // The wanted rows of every sequence, gathered; the vocabulary projection runs per sequence
  // (see LinearPerSequence).
  std::vector<int64_t> first_wanted;
  std::vector<float> wanted;
  for (size_t c = 0; c < batch.steps.size(); ++c) {
    const SequenceStep& step = batch.steps[c];
    int64_t first = batch.row_offsets[c + 1] - 1, end = batch.row_offsets[c + 1];
    if (step.mode == LogitsMode::kAll) first = batch.row_offsets[c];
    if (step.mode == LogitsMode::kRow) {
      first = batch.row_offsets[c] + step.logits_row;
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
  for (size_t c = 0; c < batch.steps.size(); ++c) {
    Linear(wanted.data() + first_wanted[c] * hidden, weights_.output_projection(), nullptr,
           logits.data() + first_wanted[c] * vocab, first_wanted[c + 1] - first_wanted[c], hidden,
           vocab);
  }

  std::vector<std::vector<float>> per_chunk;
  if (batch.steps.size() == 1) {
    per_chunk.push_back(std::move(logits));  // no copy of a possibly large block
    return per_chunk;
  }
  for (size_t c = 0; c < batch.steps.size(); ++c) {
    per_chunk.emplace_back(logits.begin() + first_wanted[c] * vocab,
                           logits.begin() + first_wanted[c + 1] * vocab);
  }
  return per_chunk;
}

}  // namespace gistmem::model
