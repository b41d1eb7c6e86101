// Builds memory/kv_layout.h views whose arrays live on the device, from host arrays: the
// form PagedAttention and CudaTransformer read (segment structs on the host, the arrays they
// point to on the device). For tests, and for a caller without device-resident page tables.
//
//   std::vector<std::vector<HostKvSegment>> sequences = ...;
//   absl::StatusOr<DeviceKvViews> views = DeviceKvViews::Upload(sequences);
//   transformer.Forward(..., views->view(s) ...);
//
// Thread-safety: immutable after Upload; the views stay valid while the object lives (moving
// it keeps them valid: the device allocation and the segment vectors move with it).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "memory/kv_layout.h"
#include "model/backend/cuda/device_buffer.h"

namespace gistmem::cuda {

// One segment's host arrays (kv_layout.h KvSegmentView's meaning). positions and the
// visibility arrays have num_slots entries (none for a shared segment); page_ids has
// ceil(num_slots / block_size).
struct HostKvSegment {
  std::vector<int32_t> page_ids;
  std::vector<int32_t> positions;
  std::vector<int32_t> visible_from;
  std::vector<int32_t> visible_until;
  int32_t num_slots = 0;
  int32_t rope_offset = 0;
  bool shared = false;
};

class DeviceKvViews {
 public:
  // One synchronous upload of every array; INVALID_ARGUMENT when an array's length does not
  // match num_slots, RESOURCE_EXHAUSTED when the device is out of memory.
  static absl::StatusOr<DeviceKvViews> Upload(std::span<const std::vector<HostKvSegment>> sequences,
                                              int32_t block_size);

  size_t size() const { return views_.size(); }
  const memory::SequenceKvView& view(size_t sequence) const { return views_[sequence]; }
  std::span<const memory::SequenceKvView> views() const { return views_; }

 private:
  DeviceBuffer arrays_;
  std::vector<std::vector<memory::KvSegmentView>> segments_;
  std::vector<memory::SequenceKvView> views_;
};

}  // namespace gistmem::cuda
