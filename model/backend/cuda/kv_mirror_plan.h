// What a device mirror of one memory::KvSegment must copy to catch up with the host, decided
// on the host from the segment's change tracking (memory/session_kv.h): appended slots, the
// range a truncation or rollback rewrote, replaced pages, and a fresh start when the mirror
// is too far behind or its arrays no longer fit; and the staging of those copies with the
// view that reads the result. Pure C++ (no CUDA): DeviceKvMirrors (device_kv_view.h) does
// this with device arrays, tests/unit/kv_mirror_plan_test.cc with host arrays on the CPU.
// Thread-safety: plain functions of their arguments.
#pragma once

#include <algorithm>
#include <cstdint>

#include "memory/session_kv.h"
#include "model/backend/cuda/int32_runs.h"

namespace gistmem::cuda {

// What the device holds of one segment. Its arrays are indexed from `base` (a page boundary):
// the per-slot arrays (positions, visible_from, visible_until) hold absolute slot base + j at
// index j, the page table absolute page base / block + j at index j; `capacity` slots (a
// multiple of the block size) and capacity / block pages.
struct MirrorState {
  bool valid = false;       // false: nothing usable on the device (make new arrays)
  uint64_t generation = 0;  // the segment's generation() when last brought up to date
  int64_t base = 0;
  int64_t capacity = 0;
  int64_t first = 0, end = 0;  // the absolute slots [first, end) the device holds
};

// One update: copy host slots [slot_begin, slot_end) of each per-slot array to device index
// i + slot_shift, and host pages [page_begin, page_end) of the page table to index
// i + page_shift; with `reallocate`, into new arrays of state.capacity slots first.
struct MirrorCopy {
  bool reallocate = false;
  int64_t slot_begin = 0, slot_end = 0, slot_shift = 0;
  int64_t page_begin = 0, page_end = 0, page_shift = 0;
  MirrorState state;  // what the device holds after the copies
};

inline constexpr int64_t kMinMirrorSlots = 256;

inline MirrorCopy PlanMirrorCopy(const MirrorState& mirror, const memory::KvSegment& segment,
                                 int32_t block) {
  const int64_t first = segment.first_slot(), n = segment.num_slots(), end = first + n;
  const int64_t first_page = first / block;
  const auto pages = static_cast<int64_t>(segment.pages().size());
  MirrorCopy copy;
  copy.state = mirror;
  if (n == 0 && !mirror.valid) return copy;  // nothing to hold yet: no arrays

  // The lowest absolute slot and page the device may hold wrongly: rewrites since the last
  // update, and whatever lies past what it held then.
  bool everything = !mirror.valid;
  int64_t slot_from = first, page_from = first_page;
  if (!everything) {
    const memory::KvSegment::Rewrites rewrites = segment.RewritesSince(mirror.generation);
    everything = !rewrites.known || first < mirror.first;
    slot_from = std::clamp(std::min(rewrites.slot_from, mirror.end), first, end);
    page_from = std::clamp(std::min(rewrites.page_from, (mirror.end + block - 1) / block),
                           first_page, first_page + pages);
  }
  // The arrays must cover [first, end) from a base at or before `first`: else start again
  // from `first` (the window moved on), in larger arrays when these are too small.
  if (!mirror.valid || first < mirror.base || end - mirror.base > mirror.capacity) {
    everything = true;
    copy.state.base = first;
    if (!mirror.valid || n > mirror.capacity) {
      copy.reallocate = true;
      const int64_t want = std::max<int64_t>(2 * n, kMinMirrorSlots);
      copy.state.capacity = (want + block - 1) / block * block;
    }
  }
  if (everything) {
    slot_from = first;
    page_from = first_page;
  }
  copy.slot_begin = slot_from - first;
  copy.slot_end = n;
  copy.slot_shift = first - copy.state.base;
  copy.page_begin = page_from - first_page;
  copy.page_end = pages;
  copy.page_shift = first_page - copy.state.base / block;
  copy.state.valid = true;
  copy.state.generation = segment.generation();
  copy.state.first = first;
  copy.state.end = end;
  return copy;
}

// A mirror's arrays in one allocation of MirrorInts(capacity) int32s: positions,
// visible_from, visible_until (capacity each), then the page table (capacity / block).
inline int64_t MirrorInts(int64_t capacity, int32_t block) {
  return 3 * capacity + capacity / block;
}

// Stages `copy` of `segment` into the arrays at `base` (capacity copy.state.capacity; device or
// host memory, only written through `staged`) and returns the view of the segment on them:
// the host view's shape with pointers into the arrays. Call it after PlanMirrorCopy, with new
// arrays when copy.reallocate; a copy whose state is not valid (an empty segment that never
// held anything) gives a view without arrays.
inline memory::KvSegmentView StageMirrorCopy(const MirrorCopy& copy,
                                             const memory::KvSegment& segment, int32_t* base,
                                             StagedInt32s& staged) {
  memory::KvSegmentView view = segment.View();
  const memory::KvSegmentView host = view;
  if (!copy.state.valid) {
    view.page_ids = view.positions = view.visible_from = view.visible_until = nullptr;
    return view;
  }
  const int64_t capacity = copy.state.capacity;
  int32_t* positions = base;
  int32_t* from = positions + capacity;
  int32_t* until = from + capacity;
  int32_t* pages = until + capacity;
  const int64_t slots = copy.slot_end - copy.slot_begin;
  const int64_t at = copy.slot_begin + copy.slot_shift;
  staged.Stage(positions + at, host.positions + copy.slot_begin, slots);
  staged.Stage(from + at, host.visible_from + copy.slot_begin, slots);
  staged.Stage(until + at, host.visible_until + copy.slot_begin, slots);
  staged.Stage(pages + copy.page_begin + copy.page_shift, host.page_ids + copy.page_begin,
               copy.page_end - copy.page_begin);
  view.positions = positions + copy.slot_shift;
  view.visible_from = from + copy.slot_shift;
  view.visible_until = until + copy.slot_shift;
  view.page_ids = pages + copy.page_shift;
  return view;
}

}  // namespace gistmem::cuda
