#include "model/backend/cuda/cuda_transformer.h"

#include <string>

#include "absl/cleanup/cleanup.h"
#include "model/backend/cuda/cuda_status.h"
#include "model/backend/cuda/kernels.h"
#include "model/weights.h"

namespace gistmem::cuda {

absl::StatusOr<KvPagePool> KvPagePool::Allocate(const memory::PageLayout& layout,
                                                int64_t num_pages) {
  if (layout.element_bytes != 2 || num_pages < 0 || layout.page_elements() <= 0) {
    return absl::InvalidArgumentError("KvPagePool: needs a bf16 layout and num_pages >= 0");
  }
  KvPagePool pool;
  absl::StatusOr<DeviceBuffer> buffer =
      DeviceBuffer::Allocate(static_cast<size_t>(num_pages) * layout.page_bytes());
  if (!buffer.ok()) return buffer.status();
  pool.buffer_ = std::move(*buffer);
  pool.layout_ = layout;
  pool.num_pages_ = num_pages;
  return pool;
}

// Per-step device buffers, grown to the largest step seen (CUDA graphs bake their addresses:
// growing one drops the graphs).
struct CudaTransformer::Scratch {
  DeviceBuffer row_data;  // int32: tokens, positions, clocks, pages, slots, logits rows
  DeviceBuffer x, normed, qkv, attention, attention_bf16, projected, gate_up, act;
  DeviceBuffer logits;
  const int32_t* tokens = nullptr;
  const int32_t* positions = nullptr;
  const int32_t* clocks = nullptr;
  const int32_t* pages = nullptr;
  const int32_t* slots = nullptr;
  const int32_t* logits_rows = nullptr;
};

CudaTransformer::~CudaTransformer() {
  if (stream_ != nullptr) {
    cudaStreamSynchronize(stream_);
    graphs_.Clear();
    cudaStreamDestroy(stream_);
  }
}

void CudaTransformer::EnableGraphs(bool on) {
  std::lock_guard lock(mutex_);
  graphs_on_ = on;
  graphs_.Clear();
}

StepGraphs::Stats CudaTransformer::graph_stats() {
  std::lock_guard lock(mutex_);
  return graphs_.stats();
}

absl::StatusOr<std::unique_ptr<CudaTransformer>> CudaTransformer::Load(
    const std::filesystem::path& model_dir, AttentionOptions attention_options) {
  std::unique_ptr<CudaTransformer> model(new CudaTransformer());
  try {
    model->config_ = model::ModelConfig::FromFile(model_dir / "config.json");
  } catch (const std::exception& error) {
    return absl::InvalidArgumentError(error.what());
  }
  const model::ModelConfig& c = model->config_;
  if (c.num_layers < 1) return absl::InvalidArgumentError("CudaTransformer: no layers");
  if (c.head_dim > 128 || c.head_dim % 8 != 0) {
    return absl::UnimplementedError("CudaTransformer: head_dim " + std::to_string(c.head_dim) +
                                    " (attention supports multiples of 8 up to 128)");
  }
  absl::StatusOr<CudaWeights> weights;
  try {
    weights = CudaWeights::Load(model::Checkpoint::Open(model_dir), c);
  } catch (const std::exception& error) {
    return absl::InvalidArgumentError(error.what());
  }
  if (!weights.ok()) return weights.status();
  model->weights_ = std::move(*weights);
  // transformers keeps inv_freq in fp32; the angle is formed from that (as the CPU reference).
  std::vector<float> inv_freq;
  for (double f : model::RopeInverseFrequencies(c))
    inv_freq.push_back(static_cast<float>(f));
  absl::StatusOr<DeviceBuffer> inv = DeviceBuffer::FromHost(std::span<const float>(inv_freq));
  if (!inv.ok()) return inv.status();
  model->inv_freq_ = std::move(*inv);
  absl::StatusOr<std::unique_ptr<Gemm>> gemm = Gemm::Create();
  if (!gemm.ok()) return gemm.status();
  model->gemm_ = std::move(*gemm);
  absl::StatusOr<std::unique_ptr<PagedAttention>> attention =
      PagedAttention::Create(attention_options);
  if (!attention.ok()) return attention.status();
  model->attention_ = std::move(*attention);
  model->scratch_ = std::make_unique<Scratch>();
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&model->stream_, cudaStreamNonBlocking));
  return model;
}

memory::PageLayout CudaTransformer::PageLayoutFor(int32_t block_size) const {
  return {.block_size = block_size,
          .num_layers = static_cast<int32_t>(config_.num_layers),
          .kv_dim = static_cast<int32_t>(config_.kv_dim()),
          .element_bytes = 2};
}

absl::Status CudaTransformer::Validate(std::span<const CudaSequenceStep> steps,
                                       const KvPagePool& pool) const {
  if (steps.empty()) return absl::InvalidArgumentError("forward: no sequences");
  if (!(pool.layout() == PageLayoutFor(pool.layout().block_size))) {
    return absl::InvalidArgumentError("forward: the KV pool was made for another model shape");
  }
  for (size_t s = 0; s < steps.size(); ++s) {
    const CudaSequenceStep& step = steps[s];
    const std::string where = "forward: sequence " + std::to_string(s) + ": ";
    const size_t n = step.tokens.size();
    if (n == 0) return absl::InvalidArgumentError(where + "no tokens");
    if (step.positions.size() != n || step.kv_pages.size() != n || step.kv_slots.size() != n ||
        (!step.clocks.empty() && step.clocks.size() != n)) {
      return absl::InvalidArgumentError(
          where + "positions, kv_pages, kv_slots (and clocks, if given) need one per token");
    }
    for (size_t i = 0; i < n; ++i) {
      if (step.tokens[i] < 0 || step.tokens[i] >= config_.vocab_size) {
        return absl::InvalidArgumentError(where + "token id " + std::to_string(step.tokens[i]) +
                                          " at index " + std::to_string(i) +
                                          " is outside the vocabulary");
      }
      if (step.positions[i] < 0) return absl::InvalidArgumentError(where + "negative position");
      if (step.kv_pages[i] < 0 || step.kv_pages[i] >= pool.num_pages() || step.kv_slots[i] < 0 ||
          step.kv_slots[i] >= pool.layout().block_size) {
        return absl::InvalidArgumentError(where + "(page, slot) of row " + std::to_string(i) +
                                          " is outside the pool");
      }
    }
    for (int32_t row : step.logits_rows) {
      if (row < 0 || static_cast<size_t>(row) >= n) {
        return absl::InvalidArgumentError(where + "logits row " + std::to_string(row) +
                                          " is outside the chunk");
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> CudaTransformer::Forward(std::span<const CudaSequenceStep> steps,
                                                            KvPagePool& pool) {
  std::vector<float> logits;
  GISTMEM_RETURN_IF_ERROR(
      Run(steps, pool, [&](const float* device, int64_t rows, cudaStream_t stream) -> absl::Status {
        logits.resize(rows * config_.vocab_size);
        GISTMEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
            logits.data(), device, logits.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
        GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
        return absl::OkStatus();
      }));
  return logits;
}

absl::Status CudaTransformer::Run(std::span<const CudaSequenceStep> steps, KvPagePool& pool,
                                  LogitsConsumer consume) {
  std::lock_guard lock(mutex_);
  GISTMEM_RETURN_IF_ERROR(Validate(steps, pool));
  const model::ModelConfig& c = config_;
  Scratch& s = *scratch_;

  // The rows of all steps, stacked; one upload of every per-row array.
  std::vector<int32_t> tokens, positions, clocks, pages, slots, logits_rows;
  std::vector<int32_t> row_offsets{0};
  std::vector<memory::SequenceKvView> views;
  for (const CudaSequenceStep& step : steps) {
    const int32_t first = row_offsets.back();
    tokens.insert(tokens.end(), step.tokens.begin(), step.tokens.end());
    positions.insert(positions.end(), step.positions.begin(), step.positions.end());
    if (step.clocks.empty()) {
      clocks.insert(clocks.end(), step.tokens.size(), 0);
    } else {
      clocks.insert(clocks.end(), step.clocks.begin(), step.clocks.end());
    }
    pages.insert(pages.end(), step.kv_pages.begin(), step.kv_pages.end());
    slots.insert(slots.end(), step.kv_slots.begin(), step.kv_slots.end());
    if (step.skip_logits) {
      // no LM head row for this sequence
    } else if (step.logits_rows.empty()) {
      logits_rows.push_back(first + static_cast<int32_t>(step.tokens.size()) - 1);
    } else {
      for (int32_t row : step.logits_rows)
        logits_rows.push_back(first + row);
    }
    row_offsets.push_back(first + static_cast<int32_t>(step.tokens.size()));
    views.push_back(step.kv);
  }
  const int64_t rows = row_offsets.back();
  const int64_t n_logits = static_cast<int64_t>(logits_rows.size());
  std::vector<int32_t> row_data;
  for (const auto* v : {&tokens, &positions, &clocks, &pages, &slots, &logits_rows})
    row_data.insert(row_data.end(), v->begin(), v->end());

  // Inputs to the device; a graph's buffers must stay where they were when it was captured,
  // so any allocation here (scratch growth, the attention plan's) drops the graphs.
  const uint64_t allocations = DeviceBuffer::AllocationsOnThisThread();
  // On every return, errors included: a Reserve that moved a buffer before a later one failed
  // must not leave graphs that read the freed one.
  absl::Cleanup drop_stale_graphs = [&] {
    if (DeviceBuffer::AllocationsOnThisThread() != allocations) graphs_.Clear();
  };
  GISTMEM_RETURN_IF_ERROR(ReserveScratch(rows, n_logits));
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.row_data.get(), row_data.data(),
                                               row_data.size() * sizeof(int32_t),
                                               cudaMemcpyHostToDevice, stream_));
  const int32_t* base = s.row_data.as<const int32_t>();
  s.tokens = base;
  s.positions = base + rows;
  s.clocks = base + 2 * rows;
  s.pages = base + 3 * rows;
  s.slots = base + 4 * rows;
  s.logits_rows = base + 5 * rows;
  const AttentionShape shape{.num_heads = static_cast<int32_t>(c.num_heads),
                             .num_kv_heads = static_cast<int32_t>(c.num_kv_heads),
                             .head_dim = static_cast<int32_t>(c.head_dim),
                             .sliding_window = static_cast<int32_t>(c.sliding_window.value_or(0))};
  GISTMEM_RETURN_IF_ERROR(attention_->Plan(views, row_offsets, shape, stream_));
  std::move(drop_stale_graphs).Invoke();

  auto enqueue = [&] { return Enqueue(rows, n_logits, pool); };
  if (graphs_on_ && rows <= kMaxGraphRows) {
    const PagedAttention::PlanOffsets plan = attention_->plan_offsets();
    const StepGraphs::Key key{
        .rows = rows,
        .logits_rows = n_logits,
        .prefill_ctas = attention_->prefill_ctas(),
        .decode_ctas = attention_->decode_ctas(),
        .combined_outputs = attention_->combined_outputs(),
        .attention_kernel = static_cast<int32_t>(attention_->planned_kernel()),
        .plan_sequences = plan.sequences,
        .plan_items = plan.items,
        .plan_combine = plan.combine,
        .plan_segment_tiles = plan.segment_tiles,
        .pool = pool.data(),
        .block_size = pool.layout().block_size};
    GISTMEM_RETURN_IF_ERROR(graphs_.Run(key, stream_, enqueue));
  } else {
    GISTMEM_RETURN_IF_ERROR(enqueue());
  }
  return consume(s.logits.as<const float>(), n_logits, stream_);
}

absl::Status CudaTransformer::ReserveScratch(int64_t rows, int64_t logits_rows) {
  const model::ModelConfig& c = config_;
  Scratch& s = *scratch_;
  auto round_up = [](int64_t n) {
    int64_t p = 64;
    while (p < n)
      p *= 2;
    return p;
  };
  rows = round_up(rows);
  logits_rows = round_up(logits_rows);
  const int64_t hidden = c.hidden_size, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const int64_t qkv_dim = q_dim + 2 * kv_dim, inter = c.intermediate_size;
  GISTMEM_RETURN_IF_ERROR(s.row_data.Reserve((5 * rows + logits_rows) * sizeof(int32_t)));
  GISTMEM_RETURN_IF_ERROR(s.x.Reserve(rows * hidden * 4));
  GISTMEM_RETURN_IF_ERROR(s.normed.Reserve(rows * std::max(hidden, q_dim) * 2));
  GISTMEM_RETURN_IF_ERROR(s.qkv.Reserve(rows * qkv_dim * 4));
  GISTMEM_RETURN_IF_ERROR(s.attention.Reserve(rows * q_dim * 4));
  GISTMEM_RETURN_IF_ERROR(s.attention_bf16.Reserve(rows * q_dim * 2));
  GISTMEM_RETURN_IF_ERROR(s.projected.Reserve(rows * hidden * 4));
  GISTMEM_RETURN_IF_ERROR(s.gate_up.Reserve(rows * 2 * inter * 4));
  GISTMEM_RETURN_IF_ERROR(s.act.Reserve(rows * inter * 2));
  return s.logits.Reserve(logits_rows * c.vocab_size * 4);
}

absl::Status CudaTransformer::Enqueue(int64_t rows, int64_t n_logits, KvPagePool& pool) {
  const model::ModelConfig& c = config_;
  Scratch& s = *scratch_;
  const int64_t hidden = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  // Each layer starts from its input norm in `normed` and leaves its MLP output in
  // `projected`, added to x by the next layer's norm (or, after the last, by the final norm of
  // the logits rows alone: no other row's x is read again).
  GISTMEM_RETURN_IF_ERROR(EmbedRmsNormToBf16(weights_.embedding.get(), s.tokens, s.x.as<float>(),
                                             weights_.layers[0].input_norm.as<float>(),
                                             s.normed.get(), rows, hidden, eps, stream_));
  for (int32_t layer = 0; layer < c.num_layers; ++layer)
    GISTMEM_RETURN_IF_ERROR(RunLayer(layer, rows, pool));
  GISTMEM_RETURN_IF_ERROR(GatherAddRmsNormToBf16(s.x.as<float>(), s.projected.as<float>(),
                                                 s.logits_rows, weights_.final_norm.as<float>(),
                                                 s.normed.get(), n_logits, hidden, eps, stream_));
  return gemm_->Run(s.normed.get(), weights_.output_projection(), nullptr, s.logits.get(),
                    OutputType::kFloat32, n_logits, hidden, c.vocab_size, stream_);
}

absl::Status CudaTransformer::RunLayer(int32_t layer, int64_t rows, KvPagePool& pool) {
  const model::ModelConfig& c = config_;
  const CudaLayerWeights& w = weights_.layers[layer];
  Scratch& s = *scratch_;
  const int64_t hidden = c.hidden_size, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const int64_t qkv_dim = q_dim + 2 * kv_dim, inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  float* x = s.x.as<float>();
  float* qkv = s.qkv.as<float>();
  float* projected = s.projected.as<float>();

  // Attention block: q|k|v in one product; RoPE on q and k and K/V to their pages in one
  // kernel; attention.
  GISTMEM_RETURN_IF_ERROR(gemm_->Run(s.normed.get(), w.qkv.get(), w.qkv_bias.as<float>(), qkv,
                                     OutputType::kFloat32, rows, hidden, qkv_dim, stream_));
  GISTMEM_RETURN_IF_ERROR(RopeWriteKv(qkv, qkv_dim, s.positions, rows, c.num_heads, c.num_kv_heads,
                                      c.head_dim, inv_freq_.as<float>(), s.pages, s.slots,
                                      pool.data(), pool.layout(), layer, stream_));
  AttentionInputs in;
  in.pool = pool.data();
  in.layout = pool.layout();
  in.layer = layer;
  in.q = qkv;
  in.q_stride = qkv_dim;
  in.positions = s.positions;
  in.clocks = s.clocks;
  in.inv_freq = inv_freq_.as<float>();
  in.out = s.attention.as<float>();
  GISTMEM_RETURN_IF_ERROR(attention_->Run(in, stream_));
  GISTMEM_RETURN_IF_ERROR(
      ToBf16(s.attention.as<float>(), s.attention_bf16.get(), rows * q_dim, stream_));
  GISTMEM_RETURN_IF_ERROR(gemm_->Run(s.attention_bf16.get(), w.o.get(), w.o_bias.as<float>(),
                                     projected, OutputType::kFloat32, rows, q_dim, hidden,
                                     stream_));

  // MLP block: the residual add and its norm in one kernel; down(silu(gate(x)) * up(x)),
  // gate|up in one product.
  GISTMEM_RETURN_IF_ERROR(AddRmsNormToBf16(x, projected, w.post_attention_norm.as<float>(),
                                           s.normed.get(), rows, hidden, eps, stream_));
  GISTMEM_RETURN_IF_ERROR(gemm_->Run(s.normed.get(), w.gate_up.get(), w.gate_up_bias.as<float>(),
                                     s.gate_up.get(), OutputType::kFloat32, rows, hidden, 2 * inter,
                                     stream_));
  GISTMEM_RETURN_IF_ERROR(SiluMul(s.gate_up.as<float>(), s.act.get(), rows, inter, stream_));
  GISTMEM_RETURN_IF_ERROR(gemm_->Run(s.act.get(), w.down.get(), w.down_bias.as<float>(), projected,
                                     OutputType::kFloat32, rows, inter, hidden, stream_));
  if (layer + 1 == c.num_layers) return absl::OkStatus();  // Enqueue adds it for the logits rows
  return AddRmsNormToBf16(x, projected, weights_.layers[layer + 1].input_norm.as<float>(),
                          s.normed.get(), rows, hidden, eps, stream_);
}

}  // namespace gistmem::cuda
