#include "model/backend/cuda/device_kv_view.h"

#include <string>

namespace gistmem::cuda {

absl::StatusOr<DeviceKvViews> DeviceKvViews::Upload(
    std::span<const std::vector<HostKvSegment>> sequences, int32_t block_size) {
  // All arrays go into one host staging vector, then one allocation and one copy.
  std::vector<int32_t> staging;
  struct Offsets {
    size_t pages, positions, from, until;
  };
  std::vector<std::vector<Offsets>> offsets(sequences.size());
  for (size_t s = 0; s < sequences.size(); ++s) {
    for (const HostKvSegment& seg : sequences[s]) {
      const size_t slots = static_cast<size_t>(seg.num_slots);
      const size_t pages = (slots + block_size - 1) / block_size;
      const size_t per_slot = seg.shared ? 0 : slots;
      if (seg.page_ids.size() < pages || seg.positions.size() != per_slot ||
          seg.visible_from.size() != per_slot || seg.visible_until.size() != per_slot) {
        return absl::InvalidArgumentError("DeviceKvViews: sequence " + std::to_string(s) +
                                          ": array lengths do not match num_slots " +
                                          std::to_string(seg.num_slots));
      }
      Offsets o;
      o.pages = staging.size();
      staging.insert(staging.end(), seg.page_ids.begin(), seg.page_ids.end());
      o.positions = staging.size();
      staging.insert(staging.end(), seg.positions.begin(), seg.positions.end());
      o.from = staging.size();
      staging.insert(staging.end(), seg.visible_from.begin(), seg.visible_from.end());
      o.until = staging.size();
      staging.insert(staging.end(), seg.visible_until.begin(), seg.visible_until.end());
      offsets[s].push_back(o);
    }
  }
  DeviceKvViews result;
  absl::StatusOr<DeviceBuffer> arrays = DeviceBuffer::FromHost(std::span<const int32_t>(staging));
  if (!arrays.ok()) return arrays.status();
  result.arrays_ = std::move(*arrays);
  const int32_t* base = result.arrays_.as<const int32_t>();
  result.segments_.resize(sequences.size());
  for (size_t s = 0; s < sequences.size(); ++s) {
    for (size_t i = 0; i < sequences[s].size(); ++i) {
      const HostKvSegment& seg = sequences[s][i];
      const Offsets& o = offsets[s][i];
      memory::KvSegmentView view;
      view.page_ids = base + o.pages;
      view.positions = seg.shared ? nullptr : base + o.positions;
      view.visible_from = seg.shared ? nullptr : base + o.from;
      view.visible_until = seg.shared ? nullptr : base + o.until;
      view.num_slots = seg.num_slots;
      view.rope_offset = seg.rope_offset;
      view.shared = seg.shared;
      result.segments_[s].push_back(view);
    }
  }
  for (const auto& segs : result.segments_) {
    result.views_.push_back({segs.data(), static_cast<int32_t>(segs.size())});
  }
  return result;
}

}  // namespace gistmem::cuda
