// CUDA graphs of forward steps, by shape: a small step's ~15 launches a layer become one graph
// launch. CudaTransformer hands each step's launches here (a function that queues them on a
// stream) with the step's key; the first sighting of a key runs them eagerly (cuBLASLt picks
// its algorithms, buffers settle), the second captures them into a graph and launches it, and
// later ones replay it. What a step reads that changes from step to step (tokens, positions,
// clocks, slots, the attention plan) lives in device buffers the caller fills before Run;
// what the graph bakes in (buffer addresses, grid sizes) must be the same for every step of
// one key, and when any such buffer moves the caller calls Clear().
//
// Thread-safety: none (the transformer's lock). Errors: a failed capture or instantiation is
// not an error (the step runs eagerly, and that key is not captured again until Clear); the
// eager launches' and the graph launch's errors are returned.
#pragma once

#include <cuda_runtime.h>

#include <compare>
#include <cstdint>
#include <map>
#include <set>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace gistmem::cuda {

class StepGraphs {
 public:
  // Everything a step's launch sequence depends on besides buffer addresses.
  struct Key {
    int64_t rows = 0;          // query rows of the step
    int64_t logits_rows = 0;   // rows through the LM head
    int64_t prefill_ctas = 0;  // PagedAttention's counts for the step's plan
    int64_t decode_ctas = 0;
    int64_t combined_outputs = 0;
    int32_t attention_kernel = 0;  // PagedAttention::planned_kernel()
    // PagedAttention::plan_offsets(): the plan's parts (sequence descriptors, work items,
    // combine list, segment tiles) move with the number of segments and sequences.
    size_t plan_sequences = 0, plan_items = 0, plan_combine = 0, plan_segment_tiles = 0;
    const void* pool = nullptr;  // the KV pages the step writes and reads
    int32_t block_size = 0;      // their layout's page size (baked into RoPE-write, attention)
    auto operator<=>(const Key&) const = default;
  };
  struct Stats {
    int64_t eager = 0, captures = 0, replays = 0, failed_captures = 0, cleared = 0;
  };

  explicit StepGraphs(size_t capacity = 64);
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Runs the step: `enqueue` queues its launches on `stream` (and returns their launch
  // status); it is called eagerly or under stream capture, never both for one step.
  absl::Status Run(const Key& key, cudaStream_t stream, absl::FunctionRef<absl::Status()> enqueue);
  // Forgets every graph (a buffer they read moved) and every sighting.
  void Clear();
  const Stats& stats() const { return stats_; }
  size_t size() const { return graphs_.size(); }

 private:
  struct Entry {
    cudaGraphExec_t exec = nullptr;
    uint64_t last_used = 0;
  };
  // Captures `enqueue` into a graph for `key`; false (and the stream as it was) on failure.
  bool Capture(const Key& key, cudaStream_t stream, absl::FunctionRef<absl::Status()> enqueue);

  size_t capacity_;
  uint64_t clock_ = 0;
  std::map<Key, Entry> graphs_;
  std::set<Key> seen_;          // sighted once: captured at the next sighting
  std::set<Key> uncapturable_;  // a capture failed: eager until Clear
  Stats stats_;
};

}  // namespace gistmem::cuda
