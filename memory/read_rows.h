// Reads rows [begin, end) of a plan into one session's memory with the CPU engine, alone (the
// service's scheduler batches many sessions instead): the forward pass under the policy's
// visibility, then SessionMemory::Applied. Returns the logits `mode` asks for. For tests,
// benchmarks and tools that drive one session directly.
#pragma once

#include <cstdint>
#include <vector>

#include "memory/session_memory.h"
#include "model/backend/cpu/cpu_transformer.h"

namespace gistmem::memory {

std::vector<float> ReadRows(model::CpuTransformer& engine, SessionMemory& memory,
                            const RowPlan& plan, int64_t begin, int64_t end,
                            model::LogitsMode mode);

}  // namespace gistmem::memory
