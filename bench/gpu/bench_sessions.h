// Sessions for the GPU benchmark, driven through model/engine.h and memory::SessionMemory
// only, as the service drives them:
//   - Fill: a context of N raw tokens appended under the session's policy WITHOUT the model
//     (reserve + applied, like gistmem-bench's step 1): the pages keep what they hold (the
//     device pool zeroes pages when it maps them), which costs a decode step the same
//     arithmetic as real K/V. Pool means are still computed (on the device).
//   - DecodeStep: one raw token for each of many sessions (and the gist token after it when the
//     policy inserts one) in ONE step, as the service runs it (ForwardSample: a greedy token
//     per session, picked where the engine keeps its logits) or with every session's logits
//     copied to the host (ForwardBatch); the rows are then dropped (Unreserve), so every timed
//     step sees the same context.
// Thread-safety: none (one benchmark thread).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/policy.h"
#include "memory/session_memory.h"
#include "model/engine.h"

namespace gistmem::bench {

// The policy `name` (full, window, pool, gist) with r, W, S; gist uses `gist_token_id`.
absl::StatusOr<memory::Policy> MakePolicy(std::string_view name, int64_t ratio, int64_t window,
                                          int64_t sinks, int32_t gist_token_id);

// Appends `raw_tokens` raw tokens (ids from `seed`, past the first 16 ids) to `memory` without
// running the model. RESOURCE_EXHAUSTED when the pool runs out (the memory then holds a
// prefix of the context; drop it).
absl::Status Fill(memory::SessionMemory& memory, int64_t raw_tokens, int64_t vocab, uint32_t seed);

// The rows one raw token `token` makes in `memory` (1, or 2 with a gist after it).
struct PendingRows {
  memory::RowPlan plan;
  std::vector<memory::SlotRef> slots;
};

// What a decode step gives back: a greedy token per session (ForwardSample, as the service's
// scheduler asks) or each session's logits row on the host (ForwardBatch).
enum class DecodeOutput { kGreedyTokens, kLogitsToHost };

// One decode step over `sessions`: reserves each one's rows, runs one step, drops the rows
// again. RESOURCE_EXHAUSTED when a session's rows find no page (nothing reserved stays).
absl::Status DecodeStep(model::Engine& engine,
                        std::span<const std::unique_ptr<memory::SessionMemory>> sessions,
                        int32_t token, DecodeOutput output = DecodeOutput::kGreedyTokens);

// Reserves the rows of `raw` (new raw tokens) in `memory` and returns them (the caller runs
// them or Unreserve()s them).
absl::StatusOr<PendingRows> ReserveRows(memory::SessionMemory& memory,
                                        std::span<const int32_t> raw);

// The step of one session's reserved rows: logits of its last raw row only.
model::SequenceStep StepOf(const memory::SessionMemory& memory, const PendingRows& rows);

}  // namespace gistmem::bench
