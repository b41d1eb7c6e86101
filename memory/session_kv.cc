#include "memory/session_kv.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"

namespace gistmem::memory {
namespace {

int32_t ClockOf(int64_t clock) {
  return clock >= kVisibleForever ? kVisibleForever
                                  : static_cast<int32_t>(std::max<int64_t>(clock, 0));
}

int32_t PagesFor(int32_t slots, int32_t block_size) {
  return (slots + block_size - 1) / block_size;
}

// Ids of SessionKv residencies and FrozenKvs: from 1, never reused in the process.
uint64_t NextKvId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

void KvSegment::MarkRewritten(int64_t slot_from, int64_t page_from) {
  ++generation_;
  rewrites_[generation_ % kRewriteHistory] = {slot_from, page_from};
}

KvSegment::Rewrites KvSegment::RewritesSince(uint64_t generation) const {
  if (generation > generation_ || generation_ - generation > kRewriteHistory) {
    return {.known = false, .slot_from = 0, .page_from = 0};
  }
  Rewrites rewrites;
  for (uint64_t g = generation + 1; g <= generation_; ++g) {
    const auto& [slot_from, page_from] = rewrites_[g % kRewriteHistory];
    rewrites.slot_from = std::min(rewrites.slot_from, slot_from);
    rewrites.page_from = std::min(rewrites.page_from, page_from);
  }
  return rewrites;
}

EntryVisibility KvSegment::visibility(int32_t i) const {
  const int32_t until = visible_until_[i];
  return {.from_clock = visible_from_[i],
          .until_clock = until == kVisibleForever ? EntryVisibility::kForever : until};
}

KvSegmentView KvSegment::View() const {
  return {.page_ids = pages_.data(),
          .positions = positions_.data(),
          .visible_from = visible_from_.data(),
          .visible_until = visible_until_.data(),
          .num_slots = num_slots()};
}

// --- FrozenKv ---

FrozenKv::FrozenKv(BlockPool& pool, int64_t stream_tokens)
    : pool_(pool),
      entries_(pool.layout().block_size),
      stream_tokens_(stream_tokens),
      id_(NextKvId()) {}

FrozenKv::~FrozenKv() {
  for (int32_t page : entries_.pages_)
    pool_.Release(page);
}

absl::Status FrozenKv::AllocatePages(int32_t slots) {
  for (int32_t p = 0; p < PagesFor(slots, entries_.block_size_); ++p) {
    absl::StatusOr<int32_t> page = pool_.Allocate();
    if (!page.ok()) return page.status();
    entries_.pages_.push_back(*page);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const FrozenKv>> FrozenKv::CopyOf(BlockPool& pool,
                                                                 const EntryList& entries,
                                                                 int64_t stream_tokens) {
  std::shared_ptr<FrozenKv> frozen(new FrozenKv(pool, stream_tokens));
  const auto count = static_cast<int32_t>(entries.size());
  if (absl::Status ok = frozen->AllocatePages(count); !ok.ok()) return ok;
  KvSegment& segment = frozen->entries_;
  std::vector<SlotRef> to;
  for (int32_t i = 0; i < count; ++i) {
    segment.positions_.push_back(static_cast<int32_t>(entries.positions[i]));
    segment.visible_from_.push_back(0);
    segment.visible_until_.push_back(kVisibleForever);
    segment.infos_.push_back(entries.infos[i]);
    to.push_back(segment.slot(i));
  }
  pool.storage().CopySlots(entries.slots, to);
  return frozen;
}

absl::StatusOr<std::shared_ptr<const FrozenKv>> FrozenKv::FromRows(
    BlockPool& pool, std::span<const int64_t> positions, const float* rows, int64_t stream_tokens) {
  std::shared_ptr<FrozenKv> frozen(new FrozenKv(pool, stream_tokens));
  const auto count = static_cast<int32_t>(positions.size());
  if (absl::Status ok = frozen->AllocatePages(count); !ok.ok()) return ok;
  KvSegment& segment = frozen->entries_;
  std::vector<SlotRef> to;
  for (int32_t i = 0; i < count; ++i) {
    segment.positions_.push_back(static_cast<int32_t>(positions[i]));
    segment.visible_from_.push_back(0);
    segment.visible_until_.push_back(kVisibleForever);
    segment.infos_.push_back({});
    to.push_back(segment.slot(i));
  }
  if (count > 0) pool.storage().ImportRows(to, rows);
  return frozen;
}

int64_t FrozenKv::bytes() const {
  return static_cast<int64_t>(entries_.pages_.size()) * pool_.layout().page_bytes();
}

// --- SessionKv ---

SessionKv::SessionKv(BlockPool& pool)
    : pool_(pool), pinned_(pool.layout().block_size), window_(pool.layout().block_size) {
  NewResidency();
}

void SessionKv::NewResidency() {
  id_ = NextKvId();
  residency_ = std::make_shared<const bool>(true);
}

SessionKv::~SessionKv() {
  if (parked()) return;  // its pages went back when it was parked
  for (const KvSegment* segment : {&pinned_, &window_}) {
    for (int32_t page : segment->pages_)
      pool_.Release(page);
  }
  for (const ReleasedPage& released : released_in_turn_)
    pool_.Release(released.page);
}

int64_t SessionKv::pages_held() const {
  if (parked()) return 0;
  return static_cast<int64_t>(pinned_.pages_.size() + window_.pages_.size() +
                              released_in_turn_.size());
}

absl::StatusOr<SlotRef> SessionKv::Append(Segment segment, int64_t position,
                                          EntryVisibility visibility, const EntryInfo& info,
                                          bool any_position) {
  if (parked()) return absl::FailedPreconditionError("the KV is parked: unpark it first");
  if (position < 0 || position >= kVisibleForever || (!any_position && position < next_position_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV position ", position, " does not follow position ", next_position_ - 1,
                     " (positions must increase past the last entry)"));
  }
  absl::StatusOr<SlotRef> slot =
      AppendTo(segment == Segment::kPinned ? pinned_ : window_, position, visibility, info);
  if (slot.ok()) next_position_ = std::max(next_position_, position + 1);
  return slot;
}

absl::StatusOr<SlotRef> SessionKv::AppendTo(KvSegment& segment, int64_t position,
                                            EntryVisibility visibility, const EntryInfo& info) {
  const int32_t block = segment.block_size_, slot = segment.num_slots();
  if (slot % block == 0) {
    absl::StatusOr<int32_t> page = pool_.Allocate();
    if (!page.ok()) return page.status();
    segment.pages_.push_back(*page);
  } else if (const int32_t tail = segment.pages_.back(); pool_.RefCount(tail) > 1) {
    // The tail page is shared (a fork): copy its written slots to a page of our own first.
    absl::StatusOr<int32_t> page = pool_.Allocate();
    if (!page.ok()) return page.status();
    std::vector<SlotRef> from, to;
    for (int32_t s = 0; s < slot % block; ++s) {
      from.push_back({tail, s});
      to.push_back({*page, s});
    }
    pool_.storage().CopySlots(from, to);
    pool_.Release(tail);
    segment.pages_.back() = *page;
    segment.MarkRewritten(KvSegment::kNone,
                          segment.first_page() + static_cast<int64_t>(segment.pages_.size()) - 1);
  }
  segment.positions_.push_back(static_cast<int32_t>(position));
  segment.visible_from_.push_back(ClockOf(visibility.from_clock));
  segment.visible_until_.push_back(ClockOf(visibility.until_clock));
  segment.infos_.push_back(info);
  return segment.slot(slot);
}

void SessionKv::Attach(std::shared_ptr<const FrozenKv> document, std::string label) {
  const int64_t offset = next_position_;
  next_position_ += document->stream_tokens();
  attached_.push_back(
      {.kv = std::move(document), .position_offset = offset, .label = std::move(label)});
}

void SessionKv::RestoreAttached(AttachedKv attached) {
  next_position_ =
      std::max(next_position_, attached.position_offset + attached.kv->stream_tokens());
  attached_.push_back(std::move(attached));
}

absl::Status SessionKv::SetNextPosition(int64_t position) {
  int64_t last = -1;
  for (const KvSegment* segment : {&pinned_, &window_}) {
    for (int32_t p : segment->positions_)
      last = std::max<int64_t>(last, p);
  }
  for (const AttachedKv& a : attached_)
    last = std::max(last, a.position_offset + a.kv->stream_tokens() - 1);
  if (position <= last) {
    return absl::DataLossError(absl::StrCat("the stream would go on at position ", position,
                                            ", before an entry at ", last));
  }
  next_position_ = position;
  return absl::OkStatus();
}

void SessionKv::ReleaseExpired(int64_t clock) {
  const int32_t block = window_.block_size_;
  while (window_.num_slots() >= block) {
    const auto& until = window_.visible_until_;
    if (std::any_of(until.begin(), until.begin() + block, [&](int32_t u) { return u >= clock; })) {
      return;
    }
    const auto head = [&](auto& v) { return std::vector(v.begin(), v.begin() + block); };
    ReleasedPage released{.page = window_.pages_.front(),
                          .positions = head(window_.positions_),
                          .visible_from = head(window_.visible_from_),
                          .visible_until = head(window_.visible_until_),
                          .infos = head(window_.infos_)};
    const auto drop = [&](auto& v) { v.erase(v.begin(), v.begin() + block); };
    drop(window_.positions_);
    drop(window_.visible_from_);
    drop(window_.visible_until_);
    drop(window_.infos_);
    window_.pages_.erase(window_.pages_.begin());
    window_.first_slot_ += block;
    if (in_turn_) {
      released_in_turn_.push_back(std::move(released));  // Rollback may need it back
    } else {
      pool_.Release(released.page);
    }
  }
}

SessionKv::Mark SessionKv::mark() const {
  return {.pinned_slots = pinned_.num_slots(),
          .window_end = window_.first_slot_ + window_.num_slots(),
          .attached = attached_.size(),
          .next_position = next_position_};
}

void SessionKv::TruncateSegment(KvSegment& segment, int32_t slots) {
  slots = std::clamp(slots, 0, segment.num_slots());
  const int32_t pages = PagesFor(slots, segment.block_size_);
  // Slots from here on will be appended anew, pages from here on taken anew.
  if (slots < segment.num_slots()) {
    segment.MarkRewritten(segment.first_slot_ + slots, segment.first_page() + pages);
  }
  for (size_t p = pages; p < segment.pages_.size(); ++p)
    pool_.Release(segment.pages_[p]);
  segment.pages_.resize(pages);
  segment.positions_.resize(slots);
  segment.visible_from_.resize(slots);
  segment.visible_until_.resize(slots);
  segment.infos_.resize(slots);
}

void SessionKv::TruncateTo(const Mark& mark) {
  TruncateSegment(pinned_, mark.pinned_slots);
  TruncateSegment(
      window_, static_cast<int32_t>(std::max<int64_t>(mark.window_end - window_.first_slot_, 0)));
  attached_.resize(std::min(attached_.size(), mark.attached));
  next_position_ = mark.next_position;
}

void SessionKv::BeginTurn() {
  in_turn_ = true;
  turn_start_ = mark();
}

void SessionKv::Rollback() {
  // Released head pages come back in front, newest release first.
  for (auto it = released_in_turn_.rbegin(); it != released_in_turn_.rend(); ++it) {
    const auto prepend = [](auto& v, auto& head) { v.insert(v.begin(), head.begin(), head.end()); };
    prepend(window_.positions_, it->positions);
    prepend(window_.visible_from_, it->visible_from);
    prepend(window_.visible_until_, it->visible_until);
    prepend(window_.infos_, it->infos);
    window_.pages_.insert(window_.pages_.begin(), it->page);
    window_.first_slot_ -= window_.block_size_;
  }
  if (!released_in_turn_.empty()) {
    window_.MarkRewritten(window_.first_slot_, window_.first_page());  // a new head
  }
  released_in_turn_.clear();
  TruncateTo(turn_start_);
  in_turn_ = false;
}

void SessionKv::EndTurn() {
  for (const ReleasedPage& released : released_in_turn_)
    pool_.Release(released.page);
  released_in_turn_.clear();
  in_turn_ = false;
}

absl::StatusOr<std::unique_ptr<SessionKv>> SessionKv::Fork() const {
  if (in_turn_) return absl::FailedPreconditionError("a KV with an open turn cannot be forked");
  if (parked()) return absl::FailedPreconditionError("a parked KV cannot be forked");
  auto copy = std::make_unique<SessionKv>(pool_);
  copy->pinned_ = pinned_;
  copy->window_ = window_;
  for (const KvSegment* segment : {&pinned_, &window_}) {
    for (int32_t page : segment->pages_)
      pool_.Retain(page);
  }
  copy->attached_ = attached_;
  copy->next_position_ = next_position_;
  return copy;
}

std::vector<int32_t> SessionKv::OwnPages() const {
  std::vector<int32_t> pages = pinned_.pages_;
  pages.insert(pages.end(), window_.pages_.begin(), window_.pages_.end());
  return pages;
}

absl::Status SessionKv::Park() {
  if (in_turn_) return absl::FailedPreconditionError("a KV with an open turn cannot be parked");
  if (parked()) return absl::FailedPreconditionError("the KV is parked already");
  const std::vector<int32_t> pages = OwnPages();
  const int64_t bytes = static_cast<int64_t>(pages.size()) * pool_.layout().page_bytes();
  absl::StatusOr<ParkingMemory> memory = pool_.storage().AllocateParking(bytes);
  if (!memory.ok()) return memory.status();
  if (absl::Status copied = pool_.storage().ExportPages(pages, memory->get()); !copied.ok()) {
    return copied;
  }
  for (int32_t page : pages)
    pool_.Release(page);
  parked_ = *std::move(memory);
  parked_bytes_ = bytes;
  id_ = 0;
  residency_.reset();  // state kept for this residency (device mirrors) must go
  return absl::OkStatus();
}

absl::Status SessionKv::Unpark() {
  if (!parked()) return absl::OkStatus();
  const size_t count = pinned_.pages_.size() + window_.pages_.size();
  std::vector<int32_t> pages;
  pages.reserve(count);
  const auto give_back = [&] {
    for (int32_t page : pages)
      pool_.Release(page);
  };
  while (pages.size() < count) {
    absl::StatusOr<int32_t> page = pool_.Allocate();
    if (!page.ok()) {
      give_back();
      return page.status();
    }
    pages.push_back(*page);
  }
  if (absl::Status copied = pool_.storage().ImportPages(pages, parked_.get()); !copied.ok()) {
    give_back();
    return copied;
  }
  std::copy_n(pages.begin(), pinned_.pages_.size(), pinned_.pages_.begin());
  std::copy(pages.begin() + static_cast<ptrdiff_t>(pinned_.pages_.size()), pages.end(),
            window_.pages_.begin());
  pinned_.MarkRewritten(KvSegment::kNone, pinned_.first_page());
  window_.MarkRewritten(KvSegment::kNone, window_.first_page());
  parked_.reset();
  parked_bytes_ = 0;
  NewResidency();
  return absl::OkStatus();
}

void SessionKv::AppendViews(std::vector<KvSegmentView>& views) const {
  views.push_back(pinned_.View());
  views.push_back(window_.View());
  for (const AttachedKv& a : attached_) {
    KvSegmentView view = a.kv->entries().View();
    view.shared = true;
    view.rope_offset = static_cast<int32_t>(a.position_offset);
    views.push_back(view);
  }
}

}  // namespace gistmem::memory
