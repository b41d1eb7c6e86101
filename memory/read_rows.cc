#include "memory/read_rows.h"

#include <span>

namespace gistmem::memory {

absl::StatusOr<std::vector<float>> ReadRows(model::Engine& engine, SessionMemory& memory,
                                            const RowPlan& plan, int64_t begin, int64_t end,
                                            model::LogitsMode mode) {
  absl::StatusOr<std::vector<SlotRef>> slots = memory.Reserve(plan, begin, end);
  if (!slots.ok()) return slots.status();
  auto part = [&](const auto& rows) { return std::span(rows).subspan(begin, end - begin); };
  const model::SequenceStep step{.tokens = part(plan.tokens),
                                 .positions = part(plan.positions),
                                 .clocks = part(plan.clocks),
                                 .slots = *slots,
                                 .kv = &memory.kv(),
                                 .mode = mode};
  absl::StatusOr<std::vector<std::vector<float>>> logits = engine.ForwardBatch(std::span(&step, 1));
  if (!logits.ok()) {
    memory.Unreserve();
    return logits.status();
  }
  if (absl::Status applied = memory.Applied(plan, begin, end); !applied.ok()) return applied;
  return std::move((*logits)[0]);
}

}  // namespace gistmem::memory
