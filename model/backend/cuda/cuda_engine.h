// The CUDA engine: CudaTransformer (bf16 weights, paged bf16 KV) behind model/engine.h, with
// its KV pool's pages in one device arena (DevicePageStorage, sized by kv_pool_bytes).
//
//   absl::StatusOr<std::unique_ptr<model::Engine>> engine =
//       model::LoadEngine(dir, {.device = "cuda:0", .kv_pool_bytes = int64_t{8} << 30});
//
// Sequences keep their KV as host memory::SessionKv objects; the engine mirrors each one's page
// tables and per-slot arrays on the device and copies only what changed before a step
// (DeviceKvMirrors), runs one CudaTransformer step over all sequences (small steps as CUDA
// graphs), and for ForwardSample picks the tokens on the device (DeviceSampler): only int32
// tokens come back. Each of these fast paths, and tensor-core attention, is an EngineOptions
// switch (model::kCudaFastPathsByDefault says whether they start on); off, the engine runs the
// reference path it replaces (whole tables re-sent, every kernel launched, logits to the host
// and the CPU sampler, CUDA-core attention). GISTMEM_CUDA_FAST_PATHS=0|1 overrides all four
// for the process; GISTMEM_ATTENTION_KERNEL the attention kernel alone.
//
// Errors: INVALID_ARGUMENT for malformed steps (nothing written), RESOURCE_EXHAUSTED when device
// memory runs out, INTERNAL for a CUDA failure (the rows' slots then hold garbage). Loading:
// FAILED_PRECONDITION when no usable GPU is present (so `--device cuda` on a machine without one
// is a start-up error), INVALID_ARGUMENT for a device index that does not exist, and
// CudaTransformer::Load's errors. Thread-safety: ForwardBatch calls take turns.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "model/engine.h"

namespace gistmem::cuda {

// options.device is "cuda" (device 0) or "cuda:N". INVALID_ARGUMENT also for a
// GISTMEM_CUDA_FAST_PATHS other than 0 or 1.
absl::StatusOr<std::unique_ptr<model::Engine>> LoadCudaEngine(
    const std::filesystem::path& model_dir, const model::EngineOptions& options);

// What a CUDA engine did so far, for tests, benchmarks and logs.
struct CudaEngineStats {
  // Steps by how they ran: eagerly, captured into a graph, replayed from one; graph captures
  // that failed (run eagerly); times the graphs were dropped because a buffer moved.
  int64_t eager_steps = 0, graph_captures = 0, graph_replays = 0, failed_captures = 0,
          graph_clears = 0;
  // Device mirrors of page tables: sessions and documents held, their bytes, and the values
  // (positions, visibility, page ids) the last step copied.
  int64_t mirrored_sessions = 0, mirrored_documents = 0, mirror_bytes = 0,
          mirror_values_last_step = 0;
};
// The counters of `engine` when it is a CUDA engine, else nullopt. Takes the engine's lock.
std::optional<CudaEngineStats> CudaStatsOf(model::Engine& engine);

}  // namespace gistmem::cuda
