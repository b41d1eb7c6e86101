// One sequence read through an engine with no memory policy (every entry pinned, visible
// for good): what the engine tests drive. Errors come back as std::invalid_argument carrying
// the engine's message, so tests read like the single-sequence API they check.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "memory/session_kv.h"
#include "model/engine.h"

namespace gistmem::model {

class PlainSequence {
 public:
  explicit PlainSequence(Engine& engine)
      : engine_(&engine), kv_(std::make_unique<memory::SessionKv>(engine.kv_pool())) {}

  // Reads `tokens` at `positions`; `clocks` (one per row, or empty) and `visibility` (one
  // per row, or empty for "for good") are a memory policy's rule for them.
  std::vector<float> Forward(std::span<const int32_t> tokens, std::span<const int64_t> positions,
                             LogitsMode mode = LogitsMode::kLast,
                             std::span<const int64_t> clocks = {},
                             std::span<const memory::EntryVisibility> visibility = {}) {
    const SequenceStep step = Reserve(tokens, positions, mode, clocks, visibility);
    absl::StatusOr<std::vector<std::vector<float>>> logits =
        engine_->ForwardBatch(std::span(&step, 1));
    if (!logits.ok()) {
      Undo();
      throw std::invalid_argument(std::string(logits.status().message()));
    }
    return std::move((*logits)[0]);
  }

  // Appends the rows' slots and returns the step that fills them (for ForwardBatch by hand);
  // Undo() drops them again when that step fails.
  SequenceStep Reserve(std::span<const int32_t> tokens, std::span<const int64_t> positions,
                       LogitsMode mode = LogitsMode::kLast, std::span<const int64_t> clocks = {},
                       std::span<const memory::EntryVisibility> visibility = {}) {
    before_ = kv_->mark();
    slots_.clear();
    for (size_t i = 0; i < positions.size(); ++i) {
      absl::StatusOr<memory::SlotRef> slot =
          kv_->Append(memory::SessionKv::Segment::kPinned, positions[i],
                      visibility.empty() ? memory::EntryVisibility{} : visibility[i], {});
      if (!slot.ok()) {
        Undo();
        throw std::invalid_argument(std::string(slot.status().message()));
      }
      slots_.push_back(*slot);
    }
    return {.tokens = tokens,
            .positions = positions,
            .clocks = clocks,
            .slots = slots_,
            .kv = kv_.get(),
            .mode = mode,
            .logits_row = 0};
  }
  void Undo() { kv_->TruncateTo(before_); }

  memory::SessionKv& kv() { return *kv_; }
  int64_t size() const { return kv_->pinned().num_slots(); }
  int64_t next_position() const { return kv_->next_position(); }
  std::vector<int64_t> positions() const {
    std::vector<int64_t> p;
    for (int32_t i = 0; i < kv_->pinned().num_slots(); ++i)
      p.push_back(kv_->pinned().position(i));
    return p;
  }
  // Every entry's key (kv = 0) or value (kv = 1) rows of one layer, entry-major, as fp32.
  std::vector<float> Rows(int32_t layer, int32_t kv) const {
    const memory::PageLayout& layout = engine_->kv_pool().layout();
    std::vector<memory::SlotRef> slots;
    for (int32_t i = 0; i < kv_->pinned().num_slots(); ++i)
      slots.push_back(kv_->pinned().slot(i));
    std::vector<float> all(2 * slots.size() * layout.num_layers * layout.kv_dim);
    if (!slots.empty()) engine_->kv_pool().storage().ExportRows(slots, all.data());
    const size_t block = slots.size() * layout.kv_dim;
    const auto first = all.begin() + static_cast<std::ptrdiff_t>((2 * layer + kv) * block);
    return std::vector<float>(first, first + static_cast<std::ptrdiff_t>(block));
  }
  std::vector<float> keys(int32_t layer) const { return Rows(layer, 0); }
  std::vector<float> values(int32_t layer) const { return Rows(layer, 1); }

 private:
  Engine* engine_;
  std::unique_ptr<memory::SessionKv> kv_;
  memory::SessionKv::Mark before_;
  std::vector<memory::SlotRef> slots_;
};

// Loads a checkpoint on the CPU engine (pages of `block_size` entries) or fails the test's
// set-up with the loader's message.
inline std::unique_ptr<Engine> LoadCpu(const std::filesystem::path& dir, int threads = 2,
                                       int32_t block_size = 16) {
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      LoadEngine(dir, {.device = "cpu", .num_threads = threads, .block_size = block_size});
  if (!engine.ok()) throw std::runtime_error(std::string(engine.status().message()));
  return *std::move(engine);
}

}  // namespace gistmem::model
