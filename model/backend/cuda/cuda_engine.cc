#include "model/backend/cuda/cuda_engine.h"

#include <cuda_runtime.h>

#include <charconv>
#include <cstdlib>
#include <exception>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "memory/block_pool.h"
#include "memory/kv_layout.h"
#include "model/backend/cuda/cuda_status.h"
#include "model/backend/cuda/cuda_transformer.h"
#include "model/backend/cuda/device_buffer.h"
#include "model/backend/cuda/device_kv_view.h"
#include "model/backend/cuda/device_page_storage.h"
#include "model/backend/cuda/device_sampler.h"

namespace gistmem::cuda {
namespace {

using model::LogitsMode;
using model::SequenceStep;

bool FitsInt32(int64_t value) {
  return value >= std::numeric_limits<int32_t>::min() &&
         value <= std::numeric_limits<int32_t>::max();
}

class CudaEngine final : public model::Engine {
 public:
  CudaEngine(std::unique_ptr<CudaTransformer> transformer,
             std::unique_ptr<DevicePageStorage> storage, int device,
             const model::EngineOptions& options)
      : transformer_(std::move(transformer)),
        storage_(storage.get()),
        pool_(std::move(storage)),
        device_(device),
        stream_(transformer_->stream()),
        device_sampling_(options.cuda_device_sampling) {
    if (options.cuda_kv_mirrors) {
      mirrors_ = std::make_unique<DeviceKvMirrors>(pool_.layout().block_size);
    }
    transformer_->EnableGraphs(options.cuda_graphs);
  }
  ~CudaEngine() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
  }

  const model::ModelConfig& config() const override { return transformer_->config(); }
  std::string device() const override { return absl::StrCat("cuda:", device_); }
  memory::BlockPool& kv_pool() override { return pool_; }

  absl::StatusOr<std::vector<std::vector<float>>> ForwardBatch(
      std::span<const SequenceStep> steps) override {
    std::vector<std::vector<float>> result;
    GISTMEM_RETURN_IF_ERROR(RunStep(
        steps, /*requests=*/{},
        [&](const float* logits, int64_t rows, cudaStream_t stream) -> absl::Status {
          std::vector<float> host(rows * config().vocab_size);
          GISTMEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
              host.data(), logits, host.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
          GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
          auto from = host.begin();
          for (const SequenceStep& step : steps) {
            const auto count = static_cast<std::ptrdiff_t>(LogitsRowsOf(step) * vocab());
            result.emplace_back(from, from + count);
            from += count;
          }
          return absl::OkStatus();
        }));
    return result;
  }

  // Logits stay on the device: the sampler picks from them and only the tokens come back;
  // sequences without a request get no LM head row.
  absl::StatusOr<std::vector<int32_t>> ForwardSample(
      std::span<const SequenceStep> steps,
      std::span<const model::TokenRequest* const> requests) override {
    if (!device_sampling_) return Engine::ForwardSample(steps, requests);
    GISTMEM_RETURN_IF_ERROR(model::CheckTokenRequests(steps, requests));
    std::vector<int32_t> tokens(steps.size(), model::kNoToken);
    GISTMEM_RETURN_IF_ERROR(RunStep(
        steps, requests,
        [&](const float* logits, int64_t rows, cudaStream_t stream) -> absl::Status {
          std::vector<DeviceSampleRow> sample_rows;
          for (const model::TokenRequest* request : requests) {
            if (request == nullptr) continue;
            sample_rows.push_back({.params = request->params,
                                   .previous_tokens = request->previous_tokens,
                                   .uniform = request->uniform});
          }
          if (static_cast<int64_t>(sample_rows.size()) != rows) {
            return absl::InternalError("forward: logits rows do not match the token requests");
          }
          absl::StatusOr<std::vector<int32_t>> picked =
              sampler_.Sample(logits, vocab(), sample_rows, stream);
          if (!picked.ok()) return picked.status();
          size_t next = 0;
          for (size_t i = 0; i < requests.size(); ++i)
            if (requests[i] != nullptr) tokens[i] = (*picked)[next++];
          return absl::OkStatus();
        }));
    return tokens;
  }

  CudaEngineStats Stats() {
    std::lock_guard lock(mutex_);
    const StepGraphs::Stats graphs = transformer_->graph_stats();
    CudaEngineStats stats{.eager_steps = graphs.eager,
                          .graph_captures = graphs.captures,
                          .graph_replays = graphs.replays,
                          .failed_captures = graphs.failed_captures,
                          .graph_clears = graphs.cleared};
    if (mirrors_) {
      stats.mirrored_sessions = static_cast<int64_t>(mirrors_->sessions());
      stats.mirrored_documents = static_cast<int64_t>(mirrors_->documents());
      stats.mirror_bytes = mirrors_->device_bytes();
      stats.mirror_values_last_step = mirrors_->values_flushed();
    }
    return stats;
  }

 private:
  int64_t vocab() const { return config().vocab_size; }

  static int64_t LogitsRowsOf(const SequenceStep& step) {
    return step.mode == LogitsMode::kAll ? static_cast<int64_t>(step.tokens.size()) : 1;
  }

  // One step: checks, the sequences' device views, the transformer; `consume` gets the device
  // logits. With `requests` (one per step), only sequences with a request get a logits row.
  absl::Status RunStep(std::span<const SequenceStep> steps,
                       std::span<const model::TokenRequest* const> requests,
                       CudaTransformer::LogitsConsumer consume) {
    std::lock_guard lock(mutex_);
    GISTMEM_RETURN_IF_ERROR(storage_->error());
    if (steps.empty()) return absl::InvalidArgumentError("forward: no sequences");
    for (const SequenceStep& step : steps)
      GISTMEM_RETURN_IF_ERROR(Check(step));
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));

    // Per step: the rows' int32 arrays (host; CudaTransformer uploads them).
    struct Rows {
      std::vector<int32_t> positions, clocks, pages, slots, logits_rows;
    };
    std::vector<Rows> rows(steps.size());
    for (size_t s = 0; s < steps.size(); ++s) {
      const SequenceStep& step = steps[s];
      Rows& r = rows[s];
      r.positions.assign(step.positions.begin(), step.positions.end());
      r.clocks.assign(step.clocks.begin(), step.clocks.end());
      for (const memory::SlotRef& slot : step.slots) {
        r.pages.push_back(slot.page);
        r.slots.push_back(slot.slot);
      }
      const auto n = static_cast<int32_t>(step.tokens.size());
      switch (step.mode) {
        case LogitsMode::kAll:
          for (int32_t i = 0; i < n; ++i)
            r.logits_rows.push_back(i);
          break;
        case LogitsMode::kLast:
          r.logits_rows.push_back(n - 1);
          break;
        case LogitsMode::kRow:
          r.logits_rows.push_back(static_cast<int32_t>(step.logits_row));
          break;
      }
    }
    // The KV views with device arrays, queued on the transformer's stream before the step.
    std::vector<memory::KvSegmentView> device_views;
    std::vector<size_t> view_offsets;
    GISTMEM_RETURN_IF_ERROR(mirrors_ ? MirroredViews(steps, device_views, view_offsets)
                                     : UploadedViews(steps, device_views, view_offsets));

    std::vector<CudaSequenceStep> cuda_steps;
    for (size_t s = 0; s < steps.size(); ++s) {
      const Rows& r = rows[s];
      cuda_steps.push_back(
          {.tokens = steps[s].tokens,
           .positions = r.positions,
           .clocks = r.clocks,
           .kv_pages = r.pages,
           .kv_slots = r.slots,
           .kv = {.segments = device_views.data() + view_offsets[s],
                  .num_segments = static_cast<int32_t>(view_offsets[s + 1] - view_offsets[s])},
           .logits_rows = r.logits_rows,
           .skip_logits = !requests.empty() && requests[s] == nullptr});
    }
    const absl::Status ran = transformer_->Run(cuda_steps, storage_->pages(), consume);
    // Nothing of the step may still run when the caller goes on: next it pools, exports, or
    // (after a failure) frees the rows' pages. Consumers that copy to the host have waited
    // already; one that queued nothing (no token requested) has not.
    const absl::Status finished = GISTMEM_CUDA_STATUS(cudaStreamSynchronize(stream_));
    return ran.ok() ? finished : ran;
  }

  // The steps' KV views from the device mirrors: only what changed since a sequence's last
  // step is copied (one upload and one kernel for all of them).
  absl::Status MirroredViews(std::span<const SequenceStep> steps,
                             std::vector<memory::KvSegmentView>& device_views,
                             std::vector<size_t>& view_offsets) {
    mirrors_->Collect();  // the last step has finished: dropping arrays is safe
    view_offsets.assign(1, 0);
    absl::Status status;
    for (const SequenceStep& step : steps) {
      status = mirrors_->Add(*step.kv, device_views);
      if (!status.ok()) break;
      view_offsets.push_back(device_views.size());
    }
    if (status.ok()) status = mirrors_->Flush(stream_);
    if (!status.ok()) mirrors_->Abandon();
    return status;
  }

  // The reference path: every segment's page table and per-slot arrays, re-sent whole to
  // device scratch in one copy.
  absl::Status UploadedViews(std::span<const SequenceStep> steps,
                             std::vector<memory::KvSegmentView>& device_views,
                             std::vector<size_t>& view_offsets) {
    std::vector<memory::KvSegmentView> host_views;
    view_offsets.assign(1, 0);
    for (const SequenceStep& step : steps) {
      step.kv->AppendViews(host_views);
      view_offsets.push_back(host_views.size());
    }
    const int32_t block_size = pool_.layout().block_size;
    std::vector<int32_t> packed;
    std::vector<size_t> offsets;  // per segment: page_ids, positions, from, until
    for (const memory::KvSegmentView& view : host_views) {
      const int32_t num_pages = (view.num_slots + block_size - 1) / block_size;
      offsets.push_back(packed.size());
      packed.insert(packed.end(), view.page_ids, view.page_ids + num_pages);
      if (view.shared) continue;
      for (const int32_t* array : {view.positions, view.visible_from, view.visible_until}) {
        offsets.push_back(packed.size());
        packed.insert(packed.end(), array, array + view.num_slots);
      }
    }
    GISTMEM_RETURN_IF_ERROR(kv_arrays_.Reserve(packed.size() * sizeof(int32_t)));
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(kv_arrays_.get(), packed.data(),
                                                 packed.size() * sizeof(int32_t),
                                                 cudaMemcpyHostToDevice, stream_));
    const int32_t* device_base = kv_arrays_.as<const int32_t>();
    device_views = host_views;
    size_t next = 0;
    for (memory::KvSegmentView& view : device_views) {
      view.page_ids = device_base + offsets[next++];
      if (view.shared) {
        view.positions = view.visible_from = view.visible_until = nullptr;
        continue;
      }
      view.positions = device_base + offsets[next++];
      view.visible_from = device_base + offsets[next++];
      view.visible_until = device_base + offsets[next++];
    }
    return absl::OkStatus();
  }

  // What CudaTransformer cannot see: the step against its SessionKv, and int32 ranges.
  absl::Status Check(const SequenceStep& step) const {
    if (step.kv == nullptr) return absl::InvalidArgumentError("forward: a sequence without a KV");
    if (step.kv->parked()) {
      return absl::FailedPreconditionError("forward: the KV is parked: unpark it first");
    }
    if (&step.kv->pool() != &pool_) {
      return absl::InvalidArgumentError("forward: the KV was made from another engine's pool");
    }
    const size_t n = step.tokens.size();
    if (n == 0) return absl::InvalidArgumentError("forward: no tokens");
    if (step.positions.size() != n || step.slots.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat("forward: ", n, " tokens but ",
                                                     step.positions.size(), " positions and ",
                                                     step.slots.size(), " slots"));
    }
    if (!step.clocks.empty() && step.clocks.size() != n) {
      return absl::InvalidArgumentError("forward: clocks must be given for every row or none");
    }
    for (size_t i = 0; i < n; ++i) {
      if (step.tokens[i] < 0 || step.tokens[i] >= config().vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("forward: token id ", step.tokens[i], " at index ", i,
                         " is outside the vocabulary [0, ", config().vocab_size, ")"));
      }
      const int64_t position = step.positions[i];
      if (position < 0 || (i > 0 && position <= step.positions[i - 1]) ||
          position >= step.kv->next_position() || !FitsInt32(position)) {
        return absl::InvalidArgumentError(
            absl::StrCat("forward: position ", position, " at index ", i,
                         " does not follow the earlier rows or lies past the KV's appended slots"));
      }
      if (!step.clocks.empty() && !FitsInt32(step.clocks[i])) {
        return absl::InvalidArgumentError("forward: a raw clock past the int32 range");
      }
    }
    if (step.mode == LogitsMode::kRow &&
        (step.logits_row < 0 || step.logits_row >= static_cast<int64_t>(n))) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward: logits_row ", step.logits_row, " is outside the chunk"));
    }
    if (config().sliding_window && !step.kv->attached().empty()) {
      return absl::InvalidArgumentError(
          "forward: attached documents need a model without a sliding window");
    }
    return absl::OkStatus();
  }

  std::unique_ptr<CudaTransformer> transformer_;
  DevicePageStorage* storage_;  // owned by pool_
  memory::BlockPool pool_;
  int device_;
  cudaStream_t stream_;   // the transformer's: uploads, the step and sampling, in order
  bool device_sampling_;  // false: ForwardSample is Engine's (logits to the host, CPU sampler)
  std::mutex mutex_;
  std::unique_ptr<DeviceKvMirrors> mirrors_;  // null: the reference path (kv_arrays_)
  DeviceBuffer kv_arrays_;  // int32: every segment's page table and per-slot arrays
  DeviceSampler sampler_;   // on the transformer's stream, under mutex_
};

absl::StatusOr<int> ParseDeviceIndex(std::string_view device) {
  if (device == "cuda") return 0;
  constexpr std::string_view kPrefix = "cuda:";
  int index = -1;
  if (device.substr(0, kPrefix.size()) == kPrefix) {
    const std::string_view digits = device.substr(kPrefix.size());
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (error == std::errc() && end == digits.data() + digits.size() && index >= 0) return index;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device \"", std::string(device), "\": say cuda or cuda:N with N a GPU index"));
}

}  // namespace

std::optional<CudaEngineStats> CudaStatsOf(model::Engine& engine) {
  auto* cuda = dynamic_cast<CudaEngine*>(&engine);
  if (cuda == nullptr) return std::nullopt;
  return cuda->Stats();
}

absl::StatusOr<std::unique_ptr<model::Engine>> LoadCudaEngine(
    const std::filesystem::path& model_dir, const model::EngineOptions& requested) {
  // GISTMEM_CUDA_FAST_PATHS=0|1 overrides the caller's fast-path choices for the whole process:
  // A/B runs of a test suite or a service without a flag in every tool.
  model::EngineOptions options = requested;
  if (const char* forced = std::getenv("GISTMEM_CUDA_FAST_PATHS")) {
    const std::string_view value = forced;
    if (value != "0" && value != "1") {
      return absl::InvalidArgumentError(
          absl::StrCat("GISTMEM_CUDA_FAST_PATHS is \"", std::string(value), "\": say 0 or 1"));
    }
    model::SetCudaFastPaths(options, value == "1");
  }
  absl::StatusOr<int> device = ParseDeviceIndex(options.device);
  if (!device.ok()) return device.status();
  if (options.block_size < 1 || options.kv_pool_bytes < 1) {
    return absl::InvalidArgumentError("the KV pool needs a block size and a budget of at least 1");
  }
  int count = 0;
  if (const cudaError_t error = cudaGetDeviceCount(&count); error != cudaSuccess || count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device ", options.device, ": no usable CUDA GPU on this machine (",
        error == cudaSuccess ? "no devices" : cudaGetErrorString(error), "); use --device cpu"));
  }
  if (*device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device ", options.device, ": this machine has ", count, " CUDA GPU(s)"));
  }
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(*device));
  absl::StatusOr<std::unique_ptr<CudaTransformer>> transformer;
  try {
    transformer = CudaTransformer::Load(
        model_dir, {.kernel = options.cuda_tensor_core_attention ? AttentionKernel::kAuto
                                                                 : AttentionKernel::kCudaCores});
  } catch (const std::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load ", model_dir.string(), ": ", error.what()));
  }
  if (absl::IsResourceExhausted(transformer.status())) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the checkpoint ", model_dir.string(), " does not fit in the memory of GPU ",
                     *device, " (bf16 weights): ", transformer.status().message()));
  }
  if (!transformer.ok()) return transformer.status();
  absl::StatusOr<std::unique_ptr<DevicePageStorage>> storage = DevicePageStorage::Create(
      (*transformer)->PageLayoutFor(options.block_size), options.kv_pool_bytes, *device);
  if (absl::IsResourceExhausted(storage.status())) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the KV pool of ", options.kv_pool_bytes, " bytes (--kv_pool_bytes) does not fit in GPU ",
        *device, " next to the weights; ask for less: ", storage.status().message()));
  }
  if (!storage.ok()) return storage.status();
  return std::make_unique<CudaEngine>(*std::move(transformer), *std::move(storage), *device,
                                      options);
}

}  // namespace gistmem::cuda
