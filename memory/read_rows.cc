#include "memory/read_rows.h"

#include <span>

namespace gistmem::memory {

std::vector<float> ReadRows(model::CpuTransformer& engine, SessionMemory& memory,
                            const RowPlan& plan, int64_t begin, int64_t end,
                            model::LogitsMode mode) {
  auto part = [&](const auto& rows) { return std::span(rows).subspan(begin, end - begin); };
  model::SequenceChunk chunk;
  chunk.tokens = part(plan.tokens);
  chunk.positions = part(plan.positions);
  chunk.clocks = part(plan.clocks);
  chunk.visibility = part(plan.visibility);
  chunk.cache = &memory.cache();
  chunk.mode = mode;
  std::vector<float> logits = std::move(engine.ForwardBatch(std::span(&chunk, 1))[0]);
  memory.Applied(plan, begin, end);
  return logits;
}

}  // namespace gistmem::memory
