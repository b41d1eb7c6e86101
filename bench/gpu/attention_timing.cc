#include "bench/gpu/attention_timing.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <random>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "model/backend/cuda/cuda_status.h"
#include "model/backend/cuda/device_buffer.h"
#include "model/backend/cuda/device_kv_view.h"
#include "model/backend/cuda/paged_attention.h"

namespace gistmem::bench {
namespace {

using cuda::DeviceBuffer;

// The visibility rule of memory/kv_layout.h, counted: slots row (p, c) sees in `view`.
int64_t VisibleSlots(const memory::KvSegmentView& view, int32_t p, int32_t c, int64_t window) {
  if (view.shared) return view.num_slots;
  int64_t seen = 0;
  for (int32_t i = 0; i < view.num_slots; ++i) {
    const int32_t k = view.positions[i];
    seen += k <= p && (window == 0 || p - k < window) && view.visible_from[i] <= c &&
            c <= view.visible_until[i];
  }
  return seen;
}

// Stream-ordered event timing of `reps` runs of `run` after `warmup` ones.
template <typename F>
absl::Status TimeRuns(F&& run, int warmup, int reps, cudaStream_t stream, std::vector<double>& ms) {
  for (int i = 0; i < warmup; ++i)
    GISTMEM_RETURN_IF_ERROR(run());
  std::vector<cudaEvent_t> events(2 * reps);
  for (cudaEvent_t& e : events)
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
  absl::Status status;
  for (int i = 0; i < reps && status.ok(); ++i) {
    cudaEventRecord(events[2 * i], stream);
    status = run();
    cudaEventRecord(events[2 * i + 1], stream);
  }
  if (status.ok()) status = GISTMEM_CUDA_STATUS(cudaStreamSynchronize(stream));
  for (int i = 0; i < reps && status.ok(); ++i) {
    float t = 0;
    cudaEventElapsedTime(&t, events[2 * i], events[2 * i + 1]);
    ms.push_back(t);
  }
  for (cudaEvent_t e : events)
    cudaEventDestroy(e);
  return status;
}

}  // namespace

absl::StatusOr<AttentionTiming> TimeAttention(const model::ModelConfig& config,
                                              memory::BlockPool& pool,
                                              std::span<const QueryRows> sequences, int warmup,
                                              int reps) {
  const memory::PageLayout& layout = pool.layout();
  if (layout.element_bytes != 2 || pool.tier() != "gpu") {
    return absl::FailedPreconditionError("attention timing needs the CUDA engine's pool");
  }
  const int64_t window = config.sliding_window.value_or(0);
  AttentionTiming timing;
  std::vector<std::vector<cuda::HostKvSegment>> host(sequences.size());
  std::vector<int32_t> row_offsets{0}, positions, clocks;
  std::vector<memory::KvSegmentView> views;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const QueryRows& q = sequences[s];
    views.clear();
    q.kv->AppendViews(views);
    int64_t slots = 0;
    for (const memory::KvSegmentView& v : views) {
      cuda::HostKvSegment seg;
      const int32_t pages = (v.num_slots + layout.block_size - 1) / layout.block_size;
      seg.page_ids.assign(v.page_ids, v.page_ids + pages);
      seg.num_slots = v.num_slots;
      seg.rope_offset = v.rope_offset;
      seg.shared = v.shared;
      if (!v.shared) {
        seg.positions.assign(v.positions, v.positions + v.num_slots);
        seg.visible_from.assign(v.visible_from, v.visible_from + v.num_slots);
        seg.visible_until.assign(v.visible_until, v.visible_until + v.num_slots);
      }
      slots += v.num_slots;
      for (size_t r = 0; r < q.positions.size(); ++r)
        timing.visible_pairs += VisibleSlots(v, q.positions[r], q.clocks[r], window);
      host[s].push_back(std::move(seg));
    }
    timing.slots += slots;
    timing.pair_slots += slots * static_cast<int64_t>(q.positions.size());
    positions.insert(positions.end(), q.positions.begin(), q.positions.end());
    clocks.insert(clocks.end(), q.clocks.begin(), q.clocks.end());
    row_offsets.push_back(static_cast<int32_t>(positions.size()));
  }
  timing.rows = static_cast<int64_t>(positions.size());
  timing.kv_bytes_per_step = timing.slots * 2 * layout.kv_dim * 2 * layout.num_layers;

  absl::StatusOr<cuda::DeviceKvViews> device_views =
      cuda::DeviceKvViews::Upload(host, layout.block_size);
  if (!device_views.ok()) return device_views.status();
  const int64_t q_dim = config.q_dim();
  std::mt19937 random(5);
  std::normal_distribution<float> normal;
  std::vector<float> q_host(static_cast<size_t>(timing.rows * q_dim));
  for (float& x : q_host)
    x = normal(random);
  std::vector<float> inv_freq(config.head_dim / 2, 1e-3f);
  absl::StatusOr<DeviceBuffer> q = DeviceBuffer::FromHost(std::span<const float>(q_host));
  absl::StatusOr<DeviceBuffer> pos = DeviceBuffer::FromHost(std::span<const int32_t>(positions));
  absl::StatusOr<DeviceBuffer> clk = DeviceBuffer::FromHost(std::span<const int32_t>(clocks));
  absl::StatusOr<DeviceBuffer> freq = DeviceBuffer::FromHost(std::span<const float>(inv_freq));
  absl::StatusOr<DeviceBuffer> out = DeviceBuffer::Allocate(timing.rows * q_dim * sizeof(float));
  for (const auto* buffer : {&q, &pos, &clk, &freq, &out})
    if (!buffer->ok()) return buffer->status();

  cudaStream_t stream = nullptr;
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const std::unique_ptr<CUstream_st, decltype(&cudaStreamDestroy)> stream_owner(stream,
                                                                                cudaStreamDestroy);
  absl::StatusOr<cuda::AttentionKernel> kernel =
      cuda::ParseAttentionKernel(absl::GetFlag(FLAGS_attention_kernel));
  if (!kernel.ok()) return kernel.status();
  cuda::AttentionOptions options{.kernel = *kernel};
  if (const int32_t chunk = absl::GetFlag(FLAGS_attention_kv_chunk); chunk > 0)
    options.kv_chunk = chunk;
  if (const int32_t ctas = absl::GetFlag(FLAGS_attention_ctas_per_sm); ctas > 0)
    options.ctas_per_multiprocessor = ctas;
  absl::StatusOr<std::unique_ptr<cuda::PagedAttention>> attention =
      cuda::PagedAttention::Create(options);
  if (!attention.ok()) return attention.status();
  const cuda::AttentionShape shape{.num_heads = static_cast<int32_t>(config.num_heads),
                                   .num_kv_heads = static_cast<int32_t>(config.num_kv_heads),
                                   .head_dim = static_cast<int32_t>(config.head_dim),
                                   .sliding_window = static_cast<int32_t>(window)};
  GISTMEM_RETURN_IF_ERROR((*attention)->Plan(device_views->views(), row_offsets, shape, stream));
  timing.prefill_ctas = (*attention)->prefill_ctas();
  timing.decode_ctas = (*attention)->decode_ctas();
  timing.combined_outputs = (*attention)->combined_outputs();

  const void* pages = pool.storage().RowsBase(0, 0, 0);  // the arena: device pages are whole
  auto step = [&]() -> absl::Status {
    for (int32_t layer = 0; layer < layout.num_layers; ++layer) {
      GISTMEM_RETURN_IF_ERROR((*attention)
                                  ->Run({.pool = pages,
                                         .layout = layout,
                                         .layer = layer,
                                         .q = q->as<const float>(),
                                         .q_stride = q_dim,
                                         .positions = pos->as<const int32_t>(),
                                         .clocks = clk->as<const int32_t>(),
                                         .inv_freq = freq->as<const float>(),
                                         .out = out->as<float>()},
                                        stream));
    }
    return absl::OkStatus();
  };
  std::vector<double> ms;
  GISTMEM_RETURN_IF_ERROR(TimeRuns(step, warmup, reps, stream, ms));
  std::sort(ms.begin(), ms.end());
  timing.ms_median = ms[ms.size() / 2];
  timing.ms_min = ms.front();
  timing.ms_max = ms.back();
  return timing;
}

}  // namespace gistmem::bench
