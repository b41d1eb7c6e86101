// ForwardPlain and NextPositions; the registry (EngineNames, LoadEngine) is
// model/engine_registry.cc, in gistmem_engines, which links every backend this build has.
#include "model/engine.h"

#include <stdexcept>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gistmem::model {

absl::Status CheckTokenRequests(std::span<const SequenceStep> steps,
                                std::span<const TokenRequest* const> requests) {
  if (requests.size() != steps.size()) {
    return absl::InvalidArgumentError(absl::StrCat("forward: ", steps.size(), " sequences but ",
                                                   requests.size(), " token requests"));
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    const TokenRequest* request = requests[i];
    if (request == nullptr) continue;
    if (steps[i].mode == LogitsMode::kAll) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward: sequence ", i, " asks for a token from every row (kAll)"));
    }
    if (const std::string error = request->params.Validate(); !error.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("forward: sequence ", i, ": ", error));
    }
    if (request->params.temperature != 0.f && !(request->uniform >= 0 && request->uniform < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward: sequence ", i, ": the uniform draw must be in [0, 1)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Engine::ForwardSample(
    std::span<const SequenceStep> steps, std::span<const TokenRequest* const> requests) {
  if (absl::Status checked = CheckTokenRequests(steps, requests); !checked.ok()) return checked;
  absl::StatusOr<std::vector<std::vector<float>>> logits = ForwardBatch(steps);
  if (!logits.ok()) return logits.status();
  std::vector<int32_t> tokens(steps.size(), kNoToken);
  for (size_t i = 0; i < steps.size(); ++i) {
    const TokenRequest* request = requests[i];
    if (request == nullptr) continue;
    try {
      tokens[i] = SampleWithUniform(request->params, (*logits)[i], request->previous_tokens,
                                    request->uniform);
    } catch (const std::invalid_argument& error) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, ": ", error.what()));
    }
  }
  return tokens;
}

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
