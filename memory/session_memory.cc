#include "memory/session_memory.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace gistmem::memory {
namespace {

bool IsRawKind(EntryKind kind) {
  return kind == EntryKind::kRaw || kind == EntryKind::kSink;
}

// Appends one slot of `segment` to `list`.
void Add(const KvSegment& segment, int32_t i, EntryList& list) {
  list.slots.push_back(segment.slot(i));
  list.positions.push_back(segment.position(i));
  list.infos.push_back(segment.info(i));
}

}  // namespace

int64_t RowPlan::LastRawRow(int64_t begin, int64_t end) const {
  for (int64_t row = end - 1; row >= begin; --row) {
    if (IsRawKind(entries[row].kind)) return row;
  }
  return -1;
}

SessionMemory::SessionMemory(BlockPool& pool, Policy policy) : policy_(policy), kv_(pool) {}

template <typename F>
void SessionMemory::ForEachSlot(F&& f) const {
  for (const KvSegment* segment : {&kv_.pinned(), &kv_.window()}) {
    for (int32_t i = 0; i < segment->num_slots(); ++i)
      f(*segment, i);
  }
}

RetainedCounts SessionMemory::Counts() const {
  RetainedCounts counts;
  ForEachSlot([&](const KvSegment& segment, int32_t i) {
    if (segment.visibility(i).until_clock < state_.raw_tokens) return;  // left for good
    switch (segment.info(i).kind) {
      case EntryKind::kRaw:
        ++counts.raw;
        break;
      case EntryKind::kSink:
        ++counts.sink;
        break;
      case EntryKind::kGist:
        ++counts.gist;
        break;
      case EntryKind::kPooled:
        ++counts.pooled;
        break;
    }
  });
  return counts;
}

absl::Status SessionMemory::Park() {
  if (in_turn_ || reserved_) {
    return absl::FailedPreconditionError("a memory with an open turn cannot be parked");
  }
  return kv_.Park();
}

int64_t SessionMemory::WastedBytes() const {
  const PageLayout& layout = kv_.pool().layout();
  const int64_t entry_bytes = layout.page_bytes() / layout.block_size;
  return Bytes() - Counts().total() * entry_bytes;
}

int64_t SessionMemory::RawRoom(int64_t max_positions) const {
  const int64_t left = max_positions - state_.stream_tokens;
  if (left <= 0) return 0;
  if (policy_.kind != PolicyKind::kGist) return left;
  // n raw tokens take n + (gists completed by then) positions; find the largest n that fits.
  const int64_t r = policy_.ratio, done = state_.raw_tokens / r;
  auto positions = [&](int64_t n) { return n + (state_.raw_tokens + n) / r - done; };
  int64_t low = 0, high = left;
  while (low < high) {
    const int64_t mid = low + (high - low + 1) / 2;
    if (positions(mid) <= left) {
      low = mid;
    } else {
      high = mid - 1;
    }
  }
  return low;
}

RowPlan SessionMemory::Plan(std::span<const int32_t> raw_tokens) const {
  RowPlan plan;
  int64_t position = state_.stream_tokens, raw_index = state_.raw_tokens;
  auto add = [&](int32_t token, EntryKind kind, int64_t clock, EntryVisibility v) {
    plan.tokens.push_back(token);
    plan.positions.push_back(position++);
    plan.clocks.push_back(clock);
    plan.visibility.push_back(v);
    plan.entries.push_back({.kind = kind, .serial = 0, .raw_index = raw_index});
  };
  for (int32_t token : raw_tokens) {
    const bool sink = policy_.kind != PolicyKind::kFull && position < policy_.sink_tokens;
    add(token, sink ? EntryKind::kSink : EntryKind::kRaw, raw_index + 1,
        RawVisibility(policy_, raw_index, position));
    if (GistFollows(policy_, raw_index)) {
      add(policy_.gist_token_id, EntryKind::kGist, raw_index + 1, GistVisibility());
    }
    ++raw_index;
  }
  return plan;
}

SessionKv::Segment SessionMemory::SegmentOf(EntryKind kind) const {
  // Raw entries that will leave live in the window; everything that stays is pinned.
  if (kind == EntryKind::kRaw && policy_.kind != PolicyKind::kFull) {
    return SessionKv::Segment::kWindow;
  }
  return SessionKv::Segment::kPinned;
}

absl::StatusOr<std::vector<SlotRef>> SessionMemory::Reserve(const RowPlan& plan, int64_t begin,
                                                            int64_t end) {
  if (reserved_ || begin < 0 || end > plan.size() || begin >= end ||
      plan.positions[begin] != state_.stream_tokens) {
    return absl::FailedPreconditionError(absl::StrCat(
        "SessionMemory::Reserve: rows [", begin, ", ", end, ") do not continue the stream at ",
        state_.stream_tokens, reserved_ ? " (rows are already reserved)" : ""));
  }
  before_reserve_ = kv_.mark();
  std::vector<SlotRef> slots;
  slots.reserve(end - begin);
  for (int64_t row = begin; row < end; ++row) {
    EntryInfo info = plan.entries[row];
    info.serial = state_.next_serial + (row - begin);
    absl::StatusOr<SlotRef> slot =
        kv_.Append(SegmentOf(info.kind), plan.positions[row], plan.visibility[row], info);
    if (!slot.ok()) {
      kv_.TruncateTo(before_reserve_);
      return slot.status();
    }
    slots.push_back(*slot);
  }
  reserved_ = true;
  reserved_begin_ = begin;
  reserved_end_ = end;
  return slots;
}

void SessionMemory::Unreserve() {
  if (!reserved_) return;
  kv_.TruncateTo(before_reserve_);
  reserved_ = false;
}

absl::Status SessionMemory::Applied(const RowPlan& plan, int64_t begin, int64_t end) {
  if (!reserved_ || begin != reserved_begin_ || end != reserved_end_) {
    return absl::FailedPreconditionError(
        absl::StrCat("SessionMemory::Applied: rows [", begin, ", ", end, ") were not reserved"));
  }
  reserved_ = false;
  for (int64_t row = begin; row < end; ++row) {
    ++state_.next_serial;
    state_.stream_tokens = plan.positions[row] + 1;
    if (IsRawKind(plan.entries[row].kind)) state_.raw_tokens = plan.entries[row].raw_index + 1;
  }
  absl::Status pooled = PoolCompletedSpans();
  // The next query has clock raw_tokens (a gist still to come) or more.
  kv_.ReleaseExpired(state_.raw_tokens);
  return pooled;
}

absl::Status SessionMemory::PoolCompletedSpans() {
  if (policy_.kind != PolicyKind::kPool) return absl::OkStatus();
  const int64_t r = policy_.ratio;
  while ((state_.pooled_spans + 1) * r <= state_.raw_tokens) {
    const int64_t span = state_.pooled_spans;
    const KvSegment& window = kv_.window();
    std::vector<SlotRef> sources;
    int64_t last_position = 0;
    for (int32_t i = 0; i < window.num_slots(); ++i) {
      const EntryInfo& e = window.info(i);
      if (e.kind == EntryKind::kRaw && e.raw_index >= span * r && e.raw_index < (span + 1) * r) {
        sources.push_back(window.slot(i));
        last_position = window.position(i);
      }
    }
    if (!sources.empty()) {  // a span of sinks only stays as it is
      const EntryInfo info{.kind = EntryKind::kPooled,
                           .serial = state_.next_serial,
                           .raw_index = (span + 1) * r - 1};
      absl::StatusOr<SlotRef> slot = kv_.Append(SessionKv::Segment::kPinned, last_position,
                                                PooledVisibility(policy_, span), info,
                                                /*any_position=*/true);
      if (!slot.ok()) return slot.status();
      kv_.pool().storage().MeanOfSlots(sources, *slot);
      ++state_.next_serial;
    }
    ++state_.pooled_spans;
  }
  return absl::OkStatus();
}

void SessionMemory::BeginTurn() {
  in_turn_ = true;
  turn_start_ = state_;
  kv_.BeginTurn();
}

void SessionMemory::EndTurn() {
  in_turn_ = false;
  kv_.EndTurn();
}

void SessionMemory::Rollback() {
  if (!in_turn_) return;
  Unreserve();
  kv_.Rollback();
  state_ = turn_start_;
  in_turn_ = false;
}

EntryList SessionMemory::NewPinnedEntries() const {
  const int64_t first_serial = in_turn_ ? turn_start_.next_serial : state_.next_serial;
  EntryList pinned;
  const KvSegment& segment = kv_.pinned();
  for (int32_t i = 0; i < segment.num_slots(); ++i) {
    if (segment.info(i).serial >= first_serial) Add(segment, i, pinned);
  }
  return pinned;
}

EntryList SessionMemory::TransientEntries() const {
  EntryList transient;
  const KvSegment& segment = kv_.window();
  for (int32_t i = 0; i < segment.num_slots(); ++i) {
    if (segment.visibility(i).until_clock >= state_.raw_tokens) Add(segment, i, transient);
  }
  return transient;
}

EntryVisibility SessionMemory::VisibilityOf(const EntryInfo& info, int64_t position) const {
  switch (info.kind) {
    case EntryKind::kRaw:
    case EntryKind::kSink:
      return RawVisibility(policy_, info.raw_index, position);
    case EntryKind::kGist:
      return GistVisibility();
    case EntryKind::kPooled:
      return PooledVisibility(policy_, info.raw_index / policy_.ratio);
  }
  return {};
}

EntryList SessionMemory::FrozenEntries() const {
  EntryList entries;
  const int64_t clock = state_.raw_tokens;  // the clock of the document's last token
  ForEachSlot([&](const KvSegment& segment, int32_t i) {
    if (segment.visibility(i).VisibleAt(clock)) Add(segment, i, entries);
  });
  return entries;
}

absl::StatusOr<std::shared_ptr<const FrozenKv>> SessionMemory::Frozen() const {
  return FrozenKv::CopyOf(kv_.pool(), FrozenEntries(), state_.stream_tokens);
}

void SessionMemory::Attach(std::shared_ptr<const FrozenKv> document, std::string label) {
  state_.stream_tokens += document->stream_tokens();
  kv_.Attach(std::move(document), std::move(label));
}

int64_t SessionMemory::AttachedEntries() const {
  int64_t entries = 0;
  for (const AttachedKv& attached : kv_.attached())
    entries += attached.kv->size();
  return entries;
}

void SessionMemory::RestoreAttached(AttachedKv attached) {
  kv_.RestoreAttached(std::move(attached));
}

absl::StatusOr<SlotRef> SessionMemory::RestoreEntry(const EntryInfo& info, int64_t position) {
  // A stored position the KV cannot hold is damage to the record, not a caller's mistake.
  if (position < 0 || position >= kVisibleForever) {
    return absl::DataLossError(absl::StrCat("stored cache entry of serial ", info.serial,
                                            " has position ", position, ", outside [0, ",
                                            kVisibleForever, ")"));
  }
  return kv_.Append(SegmentOf(info.kind), position, VisibilityOf(info, position), info,
                    /*any_position=*/true);
}

absl::Status SessionMemory::FinishRestore(const MemoryState& state) {
  if (state.raw_tokens < 0 || state.raw_tokens > state.stream_tokens || state.pooled_spans < 0 ||
      state.next_serial < 0 ||
      (policy_.kind == PolicyKind::kPool &&
       state.pooled_spans > state.raw_tokens / policy_.ratio)) {
    return absl::DataLossError(absl::StrCat("stored memory state is impossible: ", state.raw_tokens,
                                            " raw tokens, ", state.stream_tokens,
                                            " stream tokens, ", state.pooled_spans,
                                            " pooled spans, serial ", state.next_serial));
  }
  absl::Status fits = absl::OkStatus();
  ForEachSlot([&](const KvSegment& segment, int32_t i) {
    const EntryInfo& e = segment.info(i);
    if (!fits.ok()) return;
    if ((i > 0 && e.serial <= segment.info(i - 1).serial) || e.serial >= state.next_serial ||
        segment.position(i) >= state.stream_tokens || e.raw_index >= state.raw_tokens) {
      fits = absl::DataLossError(absl::StrCat("stored cache entry of serial ", e.serial,
                                              " (position ", segment.position(i),
                                              ") does not fit the stored memory state"));
    }
  });
  if (!fits.ok()) return fits;
  if (absl::Status ok = kv_.SetNextPosition(state.stream_tokens); !ok.ok()) return ok;
  state_ = state;
  return absl::OkStatus();
}

}  // namespace gistmem::memory
