// memory/kv_layout.h views whose arrays live on the device: the form PagedAttention and
// CudaTransformer read (segment structs on the host, the arrays they point to on the device).
//
// DeviceKvViews uploads host arrays whole, once (tests, and the engine's reference path):
//
//   std::vector<std::vector<HostKvSegment>> sequences = ...;
//   absl::StatusOr<DeviceKvViews> views = DeviceKvViews::Upload(sequences);
//   transformer.Forward(..., views->view(s) ...);
//
// DeviceKvMirrors keeps each SessionKv's page tables and per-slot arrays on the device between
// steps and copies only what changed (kv_mirror_plan.h, from the SessionKv's change tracking):
//
//   DeviceKvMirrors mirrors(block_size);
//   for (each sequence) GISTMEM_RETURN_IF_ERROR(mirrors.Add(kv, views));  // on failure: Abandon()
//   GISTMEM_RETURN_IF_ERROR(mirrors.Flush(stream));  // one copy + one kernel for the whole step
//   ... the step reads `views` on `stream`; wait for it before the next Add ...
//   mirrors.Collect();  // between steps: drop mirrors of destroyed, parked or idle KVs
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/kv_layout.h"
#include "memory/session_kv.h"
#include "model/backend/cuda/device_buffer.h"
#include "model/backend/cuda/kernels.h"
#include "model/backend/cuda/kv_mirror_plan.h"

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

// Thread-safety: immutable after Upload; the views stay valid while the object lives (moving
// it keeps them valid: the device allocation and the segment vectors move with it).
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

// Device mirrors of SessionKv segments and attached documents, keyed by SessionKv::id() and
// FrozenKv::id() (never by address: a new KV may take a freed one's). A mirror lives while its
// KV's residency token does (destroyed or parked: gone at the next Collect) and is dropped
// after `idle_rounds` rounds unused, so memory follows the sessions that run.
//
// A round is Add for every sequence of a step, then Flush; the views Add appends are valid on
// the Flush's stream, after it, until the next round's Flush. The page-locked host staging is
// reused once the last round's copy has left it (Flush waits for that, rarely at all: the
// engine synchronizes every step). Errors: RESOURCE_EXHAUSTED when a mirror cannot grow, INTERNAL
// for a failed copy; after any error call Abandon(): the mirrors this round touched start again
// from scratch. Thread-safety: none; one round at a time (the engine's lock).
class DeviceKvMirrors {
 public:
  explicit DeviceKvMirrors(int32_t block_size, int64_t idle_rounds = 1024);
  ~DeviceKvMirrors();
  DeviceKvMirrors(const DeviceKvMirrors&) = delete;
  DeviceKvMirrors& operator=(const DeviceKvMirrors&) = delete;

  // Appends the device views of `kv` (pinned, window, then attached documents: AppendViews'
  // order, the same num_slots, rope offsets and shared flags) to `views` and stages the copies
  // that bring its mirrors up to date. FAILED_PRECONDITION for a parked KV.
  absl::Status Add(const memory::SessionKv& kv, std::vector<memory::KvSegmentView>& views);
  // Queues this round's copies on `stream`: one upload of the staged values and one kernel
  // that puts them in place (nothing when nothing changed).
  absl::Status Flush(cudaStream_t stream);
  // Forgets what this round staged; the mirrors it touched are rebuilt whole next time.
  void Abandon();
  // Drops mirrors whose KV is destroyed or parked, or unused for idle_rounds rounds.
  void Collect();

  // For tests and logs.
  size_t sessions() const { return sessions_.size(); }
  size_t documents() const { return documents_.size(); }
  int64_t device_bytes() const;
  // Values copied by the last Flush (positions, visibility and page ids).
  int64_t values_flushed() const { return values_flushed_; }

 private:
  struct Segment {
    MirrorState state;
    DeviceBuffer arrays;  // int32: positions | visible_from | visible_until [capacity] | pages
  };
  struct SessionMirror {
    std::weak_ptr<const void> residency;
    Segment pinned, window;
    int64_t last_round = 0;
  };
  struct DocumentMirror {
    std::weak_ptr<const memory::FrozenKv> document;
    DeviceBuffer pages;
    int64_t last_round = 0;
  };

  absl::Status Sync(Segment& mirror, const memory::KvSegment& segment, memory::KvSegmentView& view);

  int32_t block_size_;
  int64_t idle_rounds_;
  int64_t round_ = 1;
  std::unordered_map<uint64_t, SessionMirror> sessions_;
  std::unordered_map<uint64_t, DocumentMirror> documents_;
  std::vector<Segment*> touched_;  // this round's, for Abandon
  std::vector<uint64_t> new_documents_;
  StagedInt32s staged_;  // this round's copies
  int64_t values_flushed_ = 0;
  void* pinned_ = nullptr;  // cudaMallocHost'ed staging for the upload
  size_t pinned_bytes_ = 0;
  cudaEvent_t copied_ = nullptr;  // the last upload out of pinned_
  DeviceBuffer device_staging_;
};

}  // namespace gistmem::cuda
