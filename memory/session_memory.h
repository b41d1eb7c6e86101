// One session's memory: its KV cache, what each entry is, and where the stream stands. It
// lays out the rows a step reads (gist tokens inserted where the policy says), and after each
// step applies the policy for real: completed spans are pooled, entries no later query can
// see are freed. A turn that is cancelled rolls back to exactly where it began.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "memory/policy.h"
#include "model/config.h"
#include "model/kv_cache.h"

namespace gistmem::memory {

// What one cache entry is. `serial` orders entries by when they were made (the cache keeps
// them in that order, so a restored cache sums attention in the same order). `raw_index` is
// the raw token's index for raw and sink entries, the span's last raw index for a pooled one,
// and the raw index of the token before it for a gist.
struct EntryInfo {
  EntryKind kind = EntryKind::kRaw;
  int64_t serial = 0;
  int64_t raw_index = 0;
};

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
  std::vector<model::EntryVisibility> visibility;
  std::vector<EntryInfo> entries;  // serials included

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
  SessionMemory(const model::ModelConfig& config, Policy policy);

  const Policy& policy() const { return policy_; }
  const MemoryState& state() const { return state_; }
  const model::KvCache& cache() const { return cache_; }
  model::KvCache& cache() { return cache_; }
  const std::vector<EntryInfo>& entries() const { return entries_; }
  RetainedCounts Counts() const;
  int64_t Bytes() const;

  // The most raw tokens that can still be read before the stream reaches `max_positions`
  // positions (gist tokens take positions too).
  int64_t RawRoom(int64_t max_positions) const;

  // The rows that read `raw_tokens` after the rows applied so far.
  RowPlan Plan(std::span<const int32_t> raw_tokens) const;
  // After the forward pass appended rows [begin, end) of `plan` to the cache (they must be
  // the next rows of the stream): records them, pools completed spans, frees what no later
  // query can see.
  void Applied(const RowPlan& plan, int64_t begin, int64_t end);

  // A turn: Rollback() brings cache and state back to BeginTurn(); EndTurn() keeps the turn.
  void BeginTurn();
  void Rollback();
  void EndTurn();
  bool in_turn() const { return in_turn_; }
  // Entries of the open turn that stay for good (they are stored once), and the entries that
  // will still leave (the window, rewritten at every turn). Indices into cache().
  std::vector<int64_t> NewPinnedEntries() const;
  std::vector<int64_t> TransientEntries() const;

  // Documents. A document is read like a session of its own (positions from 0); Frozen()
  // then keeps what its last token could see, read-only, to attach to any number of sessions.
  // Attach places it at the stream's end: later queries see all of it (gist-method.md 5).
  // The raw clock and the gist grid go on from the session's own raw tokens.
  std::vector<int64_t> FrozenEntries() const;  // indices into cache(), increasing
  std::shared_ptr<const model::KvCache> Frozen() const;
  void Attach(std::shared_ptr<const model::KvCache> document, int64_t document_stream_tokens,
              std::string label = "");
  int64_t AttachedEntries() const;

  // Restore from storage: append every stored entry in serial order, fill its rows through
  // cache().MutableKeys/MutableValues, then FinishRestore with the stored state.
  int64_t RestoreEntry(const EntryInfo& info, int64_t position);
  void RestoreAttached(model::SharedSegment segment);
  absl::Status FinishRestore(const MemoryState& state);

 private:
  model::EntryVisibility VisibilityOf(const EntryInfo& info, int64_t position) const;
  void PoolCompletedSpans();
  void FreeExpired();

  Policy policy_;
  model::KvCache cache_;
  std::vector<EntryInfo> entries_;  // parallel to cache_ entries
  MemoryState state_;

  // The open turn: its starting state and the earlier entries it has freed so far.
  bool in_turn_ = false;
  MemoryState turn_start_;
  size_t turn_start_shared_ = 0;
  model::KvCache freed_in_turn_;
  std::vector<EntryInfo> freed_entries_;
};

}  // namespace gistmem::memory
