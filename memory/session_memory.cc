#include "memory/session_memory.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"

namespace gistmem::memory {
namespace {

bool IsRawKind(EntryKind kind) {
  return kind == EntryKind::kRaw || kind == EntryKind::kSink;
}

}  // namespace

int64_t RowPlan::LastRawRow(int64_t begin, int64_t end) const {
  for (int64_t row = end - 1; row >= begin; --row) {
    if (IsRawKind(entries[row].kind)) return row;
  }
  return -1;
}

SessionMemory::SessionMemory(const model::ModelConfig& config, Policy policy)
    : policy_(policy), cache_(config), freed_in_turn_(config) {}

RetainedCounts SessionMemory::Counts() const {
  RetainedCounts counts;
  for (const EntryInfo& entry : entries_) {
    switch (entry.kind) {
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
  }
  return counts;
}

int64_t SessionMemory::Bytes() const {
  return 2 * cache_.num_layers() * cache_.size() * cache_.kv_dim() *
         static_cast<int64_t>(sizeof(float));
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
  auto add = [&](int32_t token, EntryKind kind, int64_t clock, model::EntryVisibility v) {
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

void SessionMemory::Applied(const RowPlan& plan, int64_t begin, int64_t end) {
  const int64_t rows = end - begin;
  if (begin < 0 || end > plan.size() || rows <= 0 ||
      plan.positions[begin] != state_.stream_tokens ||
      cache_.size() != static_cast<int64_t>(entries_.size()) + rows) {
    throw std::logic_error(absl::StrCat(
        "SessionMemory::Applied: rows [", begin, ", ", end, ") do not continue the stream at ",
        state_.stream_tokens, " (cache ", cache_.size(), ", entries ", entries_.size(), ")"));
  }
  for (int64_t row = begin; row < end; ++row) {
    EntryInfo info = plan.entries[row];
    info.serial = state_.next_serial++;
    entries_.push_back(info);
    state_.stream_tokens = plan.positions[row] + 1;
    if (IsRawKind(info.kind)) state_.raw_tokens = info.raw_index + 1;
  }
  PoolCompletedSpans();
  FreeExpired();
}

void SessionMemory::PoolCompletedSpans() {
  if (policy_.kind != PolicyKind::kPool) return;
  const int64_t r = policy_.ratio;
  while ((state_.pooled_spans + 1) * r <= state_.raw_tokens) {
    const int64_t span = state_.pooled_spans++;
    std::vector<int64_t> sources;
    for (int64_t i = 0; i < static_cast<int64_t>(entries_.size()); ++i) {
      const EntryInfo& e = entries_[i];
      if (e.kind == EntryKind::kRaw && e.raw_index >= span * r && e.raw_index < (span + 1) * r) {
        sources.push_back(i);
      }
    }
    if (sources.empty()) continue;  // the whole span is sinks: they stay as they are
    cache_.AppendMean(sources, cache_.positions()[sources.back()], PooledVisibility(policy_, span));
    entries_.push_back({.kind = EntryKind::kPooled,
                        .serial = state_.next_serial++,
                        .raw_index = (span + 1) * r - 1});
  }
}

void SessionMemory::FreeExpired() {
  // The next query has clock raw_tokens (a gist still to come) or more.
  std::vector<int64_t> keep;
  keep.reserve(entries_.size());
  for (int64_t i = 0; i < static_cast<int64_t>(entries_.size()); ++i) {
    if (cache_.visibility()[i].until_clock >= state_.raw_tokens) {
      keep.push_back(i);
    } else if (in_turn_ && entries_[i].serial < turn_start_.next_serial) {
      freed_in_turn_.AppendCopy(cache_, i);  // an earlier turn's entry: Rollback needs it
      freed_entries_.push_back(entries_[i]);
    }
  }
  if (keep.size() == entries_.size()) return;
  cache_.Retain(keep);
  std::vector<EntryInfo> kept;
  kept.reserve(keep.size());
  for (int64_t i : keep)
    kept.push_back(entries_[i]);
  entries_ = std::move(kept);
}

void SessionMemory::BeginTurn() {
  if (in_turn_) throw std::logic_error("SessionMemory::BeginTurn: a turn is open");
  in_turn_ = true;
  turn_start_ = state_;
  turn_start_shared_ = cache_.shared().size();
  freed_in_turn_.Truncate(0);
  freed_entries_.clear();
}

void SessionMemory::EndTurn() {
  in_turn_ = false;
  freed_in_turn_.Truncate(0);
  freed_entries_.clear();
}

void SessionMemory::Rollback() {
  if (!in_turn_) throw std::logic_error("SessionMemory::Rollback: no turn is open");
  // Merge the earlier entries still here with those the turn freed, in serial order.
  model::KvCache rebuilt = cache_.EmptyLike();
  for (size_t i = 0; i < turn_start_shared_; ++i)
    rebuilt.Attach(cache_.shared()[i]);
  std::vector<EntryInfo> entries;
  size_t here = 0, freed = 0;
  const int64_t limit = turn_start_.next_serial;
  while (true) {
    const bool have_here = here < entries_.size() && entries_[here].serial < limit;
    const bool have_freed = freed < freed_entries_.size();
    if (!have_here && !have_freed) break;
    if (have_here && (!have_freed || entries_[here].serial < freed_entries_[freed].serial)) {
      rebuilt.AppendCopy(cache_, static_cast<int64_t>(here));
      entries.push_back(entries_[here++]);
    } else {
      rebuilt.AppendCopy(freed_in_turn_, static_cast<int64_t>(freed));
      entries.push_back(freed_entries_[freed++]);
    }
  }
  rebuilt.SetNextPosition(turn_start_.stream_tokens);
  cache_ = std::move(rebuilt);
  entries_ = std::move(entries);
  state_ = turn_start_;
  EndTurn();
}

std::vector<int64_t> SessionMemory::NewPinnedEntries() const {
  const int64_t first_serial = in_turn_ ? turn_start_.next_serial : state_.next_serial;
  std::vector<int64_t> pinned;
  for (int64_t i = 0; i < static_cast<int64_t>(entries_.size()); ++i) {
    if (entries_[i].serial >= first_serial &&
        cache_.visibility()[i].until_clock == model::EntryVisibility::kForever) {
      pinned.push_back(i);
    }
  }
  return pinned;
}

std::vector<int64_t> SessionMemory::TransientEntries() const {
  std::vector<int64_t> transient;
  for (int64_t i = 0; i < static_cast<int64_t>(entries_.size()); ++i) {
    if (cache_.visibility()[i].until_clock != model::EntryVisibility::kForever) {
      transient.push_back(i);
    }
  }
  return transient;
}

model::EntryVisibility SessionMemory::VisibilityOf(const EntryInfo& info, int64_t position) const {
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

std::vector<int64_t> SessionMemory::FrozenEntries() const {
  std::vector<int64_t> entries;
  const int64_t clock = state_.raw_tokens;  // the clock of the document's last token
  for (int64_t i = 0; i < cache_.size(); ++i) {
    if (cache_.visibility()[i].VisibleAt(clock)) entries.push_back(i);
  }
  return entries;
}

std::shared_ptr<const model::KvCache> SessionMemory::Frozen() const {
  auto frozen = std::make_shared<model::KvCache>(cache_.EmptyLike());
  for (int64_t i : FrozenEntries())
    frozen->AppendCopy(cache_, i);
  frozen->SetNextPosition(state_.stream_tokens);
  return frozen;
}

void SessionMemory::Attach(std::shared_ptr<const model::KvCache> document,
                           int64_t document_stream_tokens, std::string label) {
  cache_.Attach({.entries = std::move(document),
                 .position_offset = state_.stream_tokens,
                 .stream_tokens = document_stream_tokens,
                 .label = std::move(label)});
  state_.stream_tokens += document_stream_tokens;
}

int64_t SessionMemory::AttachedEntries() const {
  int64_t entries = 0;
  for (const model::SharedSegment& segment : cache_.shared())
    entries += segment.entries->size();
  return entries;
}

void SessionMemory::RestoreAttached(model::SharedSegment segment) {
  cache_.Attach(std::move(segment));
}

int64_t SessionMemory::RestoreEntry(const EntryInfo& info, int64_t position) {
  const int64_t entry = cache_.AppendUnordered(position, VisibilityOf(info, position));
  entries_.push_back(info);
  return entry;
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
  for (size_t i = 0; i < entries_.size(); ++i) {
    const EntryInfo& e = entries_[i];
    if ((i > 0 && e.serial <= entries_[i - 1].serial) || e.serial >= state.next_serial ||
        cache_.positions()[i] >= state.stream_tokens || e.raw_index >= state.raw_tokens) {
      return absl::DataLossError(absl::StrCat("stored cache entry ", i, " (serial ", e.serial,
                                              ", position ", cache_.positions()[i],
                                              ") does not fit the stored memory state"));
    }
  }
  cache_.SetNextPosition(state.stream_tokens);
  state_ = state;
  return absl::OkStatus();
}

}  // namespace gistmem::memory
