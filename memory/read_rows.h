// Reads rows [begin, end) of a plan into one session's memory with an engine, alone (the
// service's scheduler batches many sessions instead): reserve the rows' slots, the forward
// pass under the policy's visibility, then SessionMemory::Applied. Returns the logits `mode`
// asks for. For tests, benchmarks and tools that drive one session directly.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "memory/session_memory.h"
#include "model/engine.h"

namespace gistmem::memory {

absl::StatusOr<std::vector<float>> ReadRows(model::Engine& engine, SessionMemory& memory,
                                            const RowPlan& plan, int64_t begin, int64_t end,
                                            model::LogitsMode mode);

}  // namespace gistmem::memory
