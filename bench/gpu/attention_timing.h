// Attention alone, for the GPU benchmark: the engine's paged attention kernels
// (model/backend/cuda/paged_attention.h, default options, as CudaEngine runs them; the binary's
// --attention_kernel flag (auto | tensor_cores | cuda_cores, default auto = what the engine
// runs, GISTMEM_ATTENTION_KERNEL included) picks the kernel, --attention_kv_chunk and
// --attention_ctas_per_sm the split (0: the engine's)) over the
// real page tables and visibility arrays of benchmark sessions, with random queries, timed per
// step (every layer once) with CUDA events on a stream of our own. And the FLOP it is worth:
// the (query row, slot) pairs each query can see, counted on the host from the same arrays.
//
// Thread-safety: none. Needs the CUDA engine's pool (device pages).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "memory/block_pool.h"
#include "memory/session_kv.h"
#include "model/config.h"

// Defined by the binary (bench/gpu/gpu_bench.cc).
ABSL_DECLARE_FLAG(std::string, attention_kernel);
ABSL_DECLARE_FLAG(int32_t, attention_kv_chunk);
ABSL_DECLARE_FLAG(int32_t, attention_ctas_per_sm);

namespace gistmem::bench {

// The query rows of one sequence: stream positions and raw clocks.
struct QueryRows {
  const memory::SessionKv* kv = nullptr;
  std::vector<int32_t> positions, clocks;
};

struct AttentionTiming {
  double ms_median = 0, ms_min = 0, ms_max = 0;  // one step: every layer once
  int64_t rows = 0;
  int64_t slots = 0;          // slots of all sequences' segments (what a kernel walks)
  int64_t visible_pairs = 0;  // (row, slot) pairs the rule lets through, over all sequences
  int64_t pair_slots = 0;     // sum over rows of its sequence's slots (the dense count)
  int64_t prefill_ctas = 0, decode_ctas = 0, combined_outputs = 0;
  int64_t kv_bytes_per_step = 0;  // every slot's K and V, every layer, once
};

// Plans attention for `sequences` (their KVs as they stand, reserved rows included) and runs it
// `warmup` + `reps` times. FLOP of one step: 4 * head_dim * num_heads * num_layers *
// visible_pairs. INVALID_ARGUMENT / RESOURCE_EXHAUSTED / INTERNAL from the kernels' setup
// (INVALID_ARGUMENT also for an unknown --attention_kernel).
absl::StatusOr<AttentionTiming> TimeAttention(const model::ModelConfig& config,
                                              memory::BlockPool& pool,
                                              std::span<const QueryRows> sequences, int warmup,
                                              int reps);

}  // namespace gistmem::bench
