// One sequence's KV entries, in pages of a BlockPool, as segments:
//
//   pinned   entries that stay for good (sinks, gists, pooled means; every entry under
//            `full`): append-only, never freed while the session lives
//   window   raw entries that will leave: appended at the tail; a head page goes back to the
//            pool once none of its slots is visible any more (no compaction, no copies)
//   attached read-only documents (FrozenKv), shared by every session that attaches them, each
//            at the stream position where it was attached
//
// Each segment keeps, beside its page table, flat per-slot arrays (position, visibility) in
// the form attention kernels read (memory/kv_layout.h), and what each entry is (EntryInfo).
// A memory policy (memory/session_memory.h) decides which segment an entry goes to and when
// it stops being visible; this class only stores, releases and undoes.
//
// A session that waits idle can be *parked*: its own pages (pinned and window) copied out to
// host memory and given back to the pool, everything else (per-slot arrays, documents) kept
// where it is. Unpark brings the rows back bit for bit into new pages: no recomputation.
//
// Change tracking, for engines that mirror segments on a device (the CPU engine reads the host
// arrays and ignores it): each segment numbers its slots absolutely (first_slot()), counts
// the changes a mirror cannot see by itself (generation()) and remembers, for the last few,
// the lowest slot and page they touched (RewritesSince()); each SessionKv and FrozenKv has a
// process-unique id, and a SessionKv a residency token that expires when it is parked or
// destroyed. So a mirror uploads only what changed and knows when to let go.
//
// Thread-safety: none; one owner at a time (the session's). Pages shared with forks or
// documents are never written: appending into a shared tail page copies it first. id() and
// the residency token's expiry may be read from any thread (an engine's, between steps).
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/block_pool.h"
#include "memory/entry.h"
#include "memory/kv_layout.h"

namespace gistmem::memory {

// Entries with their rows' slots, in some order (for the store, documents, pooling).
struct EntryList {
  std::vector<SlotRef> slots;
  std::vector<int64_t> positions;
  std::vector<EntryInfo> infos;
  int64_t size() const { return static_cast<int64_t>(slots.size()); }
};

// A run of slots in pages: slot i is page pages()[i / block_size], slot i % block_size.
class KvSegment {
 public:
  int32_t num_slots() const { return static_cast<int32_t>(positions_.size()); }
  const std::vector<int32_t>& pages() const { return pages_; }
  SlotRef slot(int32_t i) const { return {pages_[i / block_size_], i % block_size_}; }
  int64_t position(int32_t i) const { return positions_[i]; }
  EntryVisibility visibility(int32_t i) const;
  const EntryInfo& info(int32_t i) const { return infos_[i]; }
  // The view attention reads; valid until the segment changes.
  KvSegmentView View() const;

  // --- Change tracking (see the file comment). Slot i is absolute slot first_slot() + i, on
  // absolute page first_slot() / block_size + i / block_size: first_slot() moves by whole
  // pages, forward when the window releases its head, back when a rollback restores it.
  int64_t first_slot() const { return first_slot_; }
  // Counts the changes other than appending at the tail (into the tail page, or a fresh page
  // after it) and releasing whole head pages, which a mirror that remembers first_slot() and
  // num_slots() sees by itself: truncations, rollbacks, a shared tail page replaced by a copy,
  // pages replaced on Unpark.
  uint64_t generation() const { return generation_; }
  // What those changes touched since the segment stood at `generation`: absolute slots from
  // slot_from on may hold other positions or visibility, absolute pages from page_from on
  // other page ids (kNone: nothing). `known` is false when `generation` is more than
  // kRewriteHistory changes ago (or not one of this segment's): a mirror copies everything.
  static constexpr int kRewriteHistory = 8;
  static constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  struct Rewrites {
    bool known = true;
    int64_t slot_from = kNone;
    int64_t page_from = kNone;
  };
  Rewrites RewritesSince(uint64_t generation) const;

 private:
  friend class SessionKv;
  friend class FrozenKv;
  explicit KvSegment(int32_t block_size) : block_size_(block_size) {}
  // Records a change a mirror cannot see by itself (absolute slot and page numbers).
  void MarkRewritten(int64_t slot_from, int64_t page_from);
  int64_t first_page() const { return first_slot_ / block_size_; }

  int32_t block_size_;
  int64_t first_slot_ = 0;
  uint64_t generation_ = 0;
  // rewrites_[g % kRewriteHistory]: what change g touched ({slot_from, page_from}).
  std::array<std::pair<int64_t, int64_t>, kRewriteHistory> rewrites_{};
  std::vector<int32_t> pages_;
  std::vector<int32_t> positions_, visible_from_, visible_until_;  // [num_slots]
  std::vector<EntryInfo> infos_;                                   // [num_slots]
};

// Read-only entries made once (a document): pages of its own, released when the last session
// attaching it lets go. Every query after the attach point sees all of them.
class FrozenKv {
 public:
  // Copies `entries` (slots of `pool`) into pages of their own. RESOURCE_EXHAUSTED when the
  // pool has no room.
  static absl::StatusOr<std::shared_ptr<const FrozenKv>> CopyOf(BlockPool& pool,
                                                                const EntryList& entries,
                                                                int64_t stream_tokens);
  // Entries at `positions` with rows `rows` (fp32, [layer][kv][entry][kv_dim]).
  static absl::StatusOr<std::shared_ptr<const FrozenKv>> FromRows(
      BlockPool& pool, std::span<const int64_t> positions, const float* rows,
      int64_t stream_tokens);
  ~FrozenKv();
  FrozenKv(const FrozenKv&) = delete;
  FrozenKv& operator=(const FrozenKv&) = delete;

  const KvSegment& entries() const { return entries_; }
  int64_t size() const { return entries_.num_slots(); }
  // Unique in the process (never reused): what engines key per-document state by. A
  // document never changes, so its liveness is its shared_ptr's.
  uint64_t id() const { return id_; }
  // Positions the document takes in a stream that attaches it.
  int64_t stream_tokens() const { return stream_tokens_; }
  int64_t bytes() const;
  BlockPool& pool() const { return pool_; }

 private:
  FrozenKv(BlockPool& pool, int64_t stream_tokens);
  absl::Status AllocatePages(int32_t slots);

  BlockPool& pool_;
  KvSegment entries_;
  int64_t stream_tokens_;
  uint64_t id_;
};

// A document as one session attached it.
struct AttachedKv {
  std::shared_ptr<const FrozenKv> kv;
  int64_t position_offset = 0;  // the stream position it was attached at
  std::string label;            // who it is (a document id), for the session's records
};

class SessionKv {
 public:
  enum class Segment { kPinned, kWindow };

  explicit SessionKv(BlockPool& pool);
  ~SessionKv();  // gives its pages back
  SessionKv(const SessionKv&) = delete;
  SessionKv& operator=(const SessionKv&) = delete;

  BlockPool& pool() const { return pool_; }
  // Who this KV is to an engine keeping per-KV state (device mirrors of its segments): an id
  // unique in the process, never a freed KV's (unlike an address), new after every Unpark, 0
  // while parked; and a token that expires when that state must go (Park, the destructor).
  // Both may be read from any thread.
  uint64_t id() const { return id_; }
  std::weak_ptr<const void> residency() const { return residency_; }
  const KvSegment& pinned() const { return pinned_; }
  const KvSegment& window() const { return window_; }
  const std::vector<AttachedKv>& attached() const { return attached_; }
  // The position the next token of the stream may take: past every entry and document.
  int64_t next_position() const { return next_position_; }
  // Pages this session holds in the pool (shared ones included; none while parked) and their
  // bytes.
  int64_t pages_held() const;
  int64_t bytes_held() const { return pages_held() * pool_.layout().page_bytes(); }

  // Copies the session's own pages to host memory (PageStorage::AllocateParking) and gives
  // them back to the pool; attached documents stay as they are (they are shared). Until
  // Unpark, nothing but Unpark, the destructor and the getters may be called (Append and Fork
  // return FAILED_PRECONDITION; AppendViews must not be called). FAILED_PRECONDITION inside a
  // turn or when parked already; the tier's error (RESOURCE_EXHAUSTED: no host memory) leaves
  // the KV as it was.
  absl::Status Park();
  // Takes new pages from the pool and copies the parked rows back into them.
  // RESOURCE_EXHAUSTED when the pool has no room: the KV then stays parked, unchanged.
  absl::Status Unpark();
  bool parked() const { return parked_ != nullptr; }
  // Bytes of host memory the parked pages take (0 when not parked).
  int64_t parked_bytes() const { return parked_bytes_; }

  // Appends one slot at the tail of `segment`; the engine (or a restore) then writes its rows
  // at the returned slot. Positions of pinned and window entries must increase past
  // next_position() unless `any_position` (pooled entries, restores). RESOURCE_EXHAUSTED when
  // no page can be had, INVALID_ARGUMENT on a bad position; the KV is then unchanged.
  absl::StatusOr<SlotRef> Append(Segment segment, int64_t position, EntryVisibility visibility,
                                 const EntryInfo& info, bool any_position = false);
  // Attaches a document at next_position(); the stream moves past its stream_tokens.
  void Attach(std::shared_ptr<const FrozenKv> document, std::string label);
  // A stored session's document, at the offset it was attached at.
  void RestoreAttached(AttachedKv attached);
  // After a restore: where the stream goes on (not before any entry).
  absl::Status SetNextPosition(int64_t position);

  // Gives back window head pages none of whose slots a query with raw clock >= `clock` sees.
  void ReleaseExpired(int64_t clock);

  // Where the KV stands; TruncateTo(mark) undoes every append and attach made after it (a
  // failed step). Pages released in between are not brought back: use a turn for that.
  struct Mark {
    int32_t pinned_slots = 0;
    int64_t window_end = 0;  // window slots ever appended, released ones included
    size_t attached = 0;
    int64_t next_position = 0;
  };
  Mark mark() const;
  void TruncateTo(const Mark& mark);

  // A turn: Rollback() brings the KV back to exactly where BeginTurn() found it, the window
  // pages released in between included (they are held until EndTurn()).
  void BeginTurn();
  void Rollback();
  void EndTurn();

  // A copy sharing every page (copy on write) and every document. Not inside a turn.
  absl::StatusOr<std::unique_ptr<SessionKv>> Fork() const;

  // The segments attention reads, in summation order: pinned, window, attached documents.
  // The views point into this object: valid until it changes.
  void AppendViews(std::vector<KvSegmentView>& views) const;

 private:
  // The window's slots [window_.first_slot(), window_.first_slot() + window_.num_slots()) of
  // all it ever held.
  struct ReleasedPage {
    int32_t page;
    std::vector<int32_t> positions, visible_from, visible_until;
    std::vector<EntryInfo> infos;
  };

  // The session's own pages, pinned then window: what Park copies and Unpark refills.
  std::vector<int32_t> OwnPages() const;
  absl::StatusOr<SlotRef> AppendTo(KvSegment& segment, int64_t position, EntryVisibility visibility,
                                   const EntryInfo& info);
  void TruncateSegment(KvSegment& segment, int32_t slots);
  // A new id and residency token (construction, Unpark).
  void NewResidency();

  BlockPool& pool_;
  KvSegment pinned_, window_;
  std::vector<AttachedKv> attached_;
  int64_t next_position_ = 0;

  bool in_turn_ = false;
  Mark turn_start_;
  std::vector<ReleasedPage> released_in_turn_;  // in release order, still held

  uint64_t id_ = 0;
  std::shared_ptr<const bool> residency_;

  ParkingMemory parked_{nullptr, nullptr};  // OwnPages()' rows while parked
  int64_t parked_bytes_ = 0;
};

}  // namespace gistmem::memory
