// One session's memory: its paged KV (memory/session_kv.h), what each entry is, and where the
// stream stands. It lays out the rows a step reads (gist tokens inserted where the policy
// says), places each row's entry in the pinned segment or the window, and after each step
// applies the policy for real: completed spans are pooled, window pages no later query can
// see go back to the pool. A turn that is cancelled rolls back to exactly where it began.
//
// Thread-safety: none; one owner at a time (the session's).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/block_pool.h"
#include "memory/entry.h"
#include "memory/policy.h"
#include "memory/session_kv.h"

namespace gistmem::memory {

// Where the stream stands; stored with the session so a restored memory goes on exactly.
struct MemoryState {
  int64_t stream_tokens = 0;  // positions used, gist tokens and attached documents included
  int64_t raw_tokens = 0;     // the raw clock
  int64_t pooled_spans = 0;   // pool: spans already pooled (or skipped: all sinks)
  int64_t next_serial = 0;
  bool operator==(const MemoryState&) const = default;
};

// The rows of one or more steps: raw tokens with gist tokens inserted, each with its stream
// position, raw clock and the visibility its entry gets.
struct RowPlan {
  std::vector<int32_t> tokens;
  std::vector<int64_t> positions;
  std::vector<int64_t> clocks;
  std::vector<EntryVisibility> visibility;
  std::vector<EntryInfo> entries;  // serial 0: the memory numbers them when they are read

  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
  // Index of the last raw row in [begin, end), or -1 when there is none.
  int64_t LastRawRow(int64_t begin, int64_t end) const;
};

struct RetainedCounts {
  int64_t sink = 0, raw = 0, gist = 0, pooled = 0;
  int64_t total() const { return sink + raw + gist + pooled; }
};

class SessionMemory {
 public:
  // An empty memory whose pages come from `pool` (the engine's).
  SessionMemory(BlockPool& pool, Policy policy);

  const Policy& policy() const { return policy_; }
  const MemoryState& state() const { return state_; }
  const SessionKv& kv() const { return kv_; }
  // Entries a later query can still see, by kind.
  RetainedCounts Counts() const;
  // Bytes of the pages the session holds (a page-rounded figure: see WastedBytes).
  int64_t Bytes() const { return kv_.bytes_held(); }
  // Of Bytes(), what holds no retained entry (free tail slots, expired slots on live pages).
  int64_t WastedBytes() const;

  // Host tier (SessionKv::Park): an idle memory's own pages leave the pool for host memory and
  // come back bit for bit. While parked, only Unpark, the getters and the destructor may be
  // called. Park: FAILED_PRECONDITION inside a turn. Unpark: RESOURCE_EXHAUSTED when the pool
  // has no room (still parked).
  absl::Status Park();
  absl::Status Unpark() { return kv_.Unpark(); }
  bool parked() const { return kv_.parked(); }
  int64_t ParkedBytes() const { return kv_.parked_bytes(); }

  // The most raw tokens that can still be read before the stream reaches `max_positions`
  // positions (gist tokens take positions too).
  int64_t RawRoom(int64_t max_positions) const;

  // The rows that read `raw_tokens` after the rows applied so far.
  RowPlan Plan(std::span<const int32_t> raw_tokens) const;
  // Appends the entries of rows [begin, end) of `plan` (the next rows of the stream) to the
  // KV and returns the slots where the engine writes their keys and values.
  // RESOURCE_EXHAUSTED (nothing appended) when the pool has no room.
  absl::StatusOr<std::vector<SlotRef>> Reserve(const RowPlan& plan, int64_t begin, int64_t end);
  // The step that was to fill the reserved rows failed: they are dropped.
  void Unreserve();
  // After the engine wrote the reserved rows [begin, end): records them, pools completed
  // spans, gives back pages no later query can see. RESOURCE_EXHAUSTED when a pooled entry
  // finds no page (the rows stay read); FAILED_PRECONDITION when the rows were not reserved.
  absl::Status Applied(const RowPlan& plan, int64_t begin, int64_t end);

  // A turn: Rollback() brings KV and state back to BeginTurn(); EndTurn() keeps the turn.
  void BeginTurn();
  void Rollback();
  void EndTurn();
  bool in_turn() const { return in_turn_; }
  // Entries of the open turn that stay for good (they are stored once), and the entries that
  // will still leave (the window, rewritten at every turn).
  EntryList NewPinnedEntries() const;
  EntryList TransientEntries() const;

  // Documents. A document is read like a session of its own (positions from 0); Frozen()
  // then copies what its last token could see into read-only pages, to attach to any number
  // of sessions. Attach places it at the stream's end: later queries see all of it
  // (gist-method.md 5). The raw clock and the gist grid go on from the session's own tokens.
  EntryList FrozenEntries() const;
  absl::StatusOr<std::shared_ptr<const FrozenKv>> Frozen() const;
  void Attach(std::shared_ptr<const FrozenKv> document, std::string label = "");
  int64_t AttachedEntries() const;

  // Restore from storage: append every stored entry in serial order (RestoreEntry returns
  // the slot whose rows the caller then imports), then FinishRestore with the stored state.
  absl::StatusOr<SlotRef> RestoreEntry(const EntryInfo& info, int64_t position);
  void RestoreAttached(AttachedKv attached);
  absl::Status FinishRestore(const MemoryState& state);

 private:
  SessionKv::Segment SegmentOf(EntryKind kind) const;
  EntryVisibility VisibilityOf(const EntryInfo& info, int64_t position) const;
  absl::Status PoolCompletedSpans();
  // Calls f(segment, index) for every slot of pinned, then window.
  template <typename F>
  void ForEachSlot(F&& f) const;

  Policy policy_;
  SessionKv kv_;
  MemoryState state_;
  bool reserved_ = false;
  SessionKv::Mark before_reserve_;
  int64_t reserved_begin_ = 0, reserved_end_ = 0;

  bool in_turn_ = false;
  MemoryState turn_start_;
};

}  // namespace gistmem::memory
