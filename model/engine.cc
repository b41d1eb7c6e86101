// ForwardPlain and NextPositions; the registry (EngineNames, LoadEngine) is
// model/engine_registry.cc, in gistmem_engines, which links every backend this build has.
#include "model/engine.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gistmem::model {

std::vector<int64_t> NextPositions(const memory::SessionKv& kv, size_t count) {
  std::vector<int64_t> positions(count);
  for (size_t i = 0; i < count; ++i)
    positions[i] = kv.next_position() + static_cast<int64_t>(i);
  return positions;
}

absl::StatusOr<std::vector<float>> ForwardPlain(Engine& engine, memory::SessionKv& kv,
                                                std::span<const int32_t> tokens,
                                                std::span<const int64_t> positions,
                                                LogitsMode mode) {
  if (tokens.size() != positions.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(tokens.size(), " tokens but ", positions.size(), " positions"));
  }
  const memory::SessionKv::Mark before = kv.mark();
  std::vector<memory::SlotRef> slots;
  for (int64_t position : positions) {
    absl::StatusOr<memory::SlotRef> slot =
        kv.Append(memory::SessionKv::Segment::kPinned, position, {}, {});
    if (!slot.ok()) {
      kv.TruncateTo(before);
      return slot.status();
    }
    slots.push_back(*slot);
  }
  const SequenceStep step{.tokens = tokens,
                          .positions = positions,
                          .clocks = {},
                          .slots = slots,
                          .kv = &kv,
                          .mode = mode};
  absl::StatusOr<std::vector<std::vector<float>>> logits = engine.ForwardBatch(std::span(&step, 1));
  if (!logits.ok()) {
    kv.TruncateTo(before);
    return logits.status();
  }
  return std::move((*logits)[0]);
}

}  // namespace gistmem::model
