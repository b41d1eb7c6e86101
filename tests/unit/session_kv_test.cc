// memory::SessionKv: a sequence's entries in pinned and window segments of pool pages, with
// documents (FrozenKv) attached. Appends and their position rule, window head pages given back
// once none of their slots is visible, TruncateTo and turns (a rollback restores everything,
// released pages included), forks sharing pages with copy on write, documents shared by
// sessions, the views attention reads, and parking in host memory (the host tier).
#include "memory/session_kv.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "memory/block_pool.h"
#include "memory/entry.h"
#include "memory/kv_layout.h"

namespace gistmem::memory {
namespace {

using ::testing::HasSubstr;
using Segment = SessionKv::Segment;

// 4 slots a page, one layer, rows of 2 values: small enough to reason about every slot.
constexpr PageLayout kLayout{.block_size = 4, .num_layers = 1, .kv_dim = 2, .element_bytes = 4};
constexpr int64_t kRowFloats = 2 * kLayout.num_layers * kLayout.kv_dim;  // K and V of one entry

class SessionKvTest : public ::testing::Test {
 protected:
  SessionKvTest() : pool_(MakeHostPageStorage(kLayout, 64 * kLayout.page_bytes())) {}

  // Appends an entry and writes rows into it whose values are `value` (K) and -value (V).
  SlotRef Add(SessionKv& kv, Segment segment, int64_t position, EntryVisibility visibility = {},
              EntryInfo info = {}) {
    absl::StatusOr<SlotRef> slot = kv.Append(segment, position, visibility, info);
    EXPECT_TRUE(slot.ok()) << slot.status();
    if (!slot.ok()) return {};
    const float v = static_cast<float>(position) + 0.5f;
    const float rows[kRowFloats] = {v, v, -v, -v};
    pool_.storage().ImportRows(std::span(&*slot, 1), rows);
    return *slot;
  }

  // Every row of a segment's slots, [kv][entry][kv_dim] (one layer).
  std::vector<float> RowsOf(const KvSegment& segment) const {
    std::vector<SlotRef> slots;
    for (int32_t i = 0; i < segment.num_slots(); ++i)
      slots.push_back(segment.slot(i));
    std::vector<float> rows(slots.size() * kRowFloats);
    if (!slots.empty()) pool_.storage().ExportRows(slots, rows.data());
    return rows;
  }

  std::vector<int64_t> PositionsOf(const KvSegment& segment) const {
    std::vector<int64_t> positions;
    for (int32_t i = 0; i < segment.num_slots(); ++i)
      positions.push_back(segment.position(i));
    return positions;
  }

  std::shared_ptr<const FrozenKv> Document(std::vector<int64_t> positions, int64_t stream_tokens,
                                           float base) {
    std::vector<float> rows(positions.size() * kRowFloats);
    for (size_t i = 0; i < rows.size(); ++i)
      rows[i] = base + static_cast<float>(i);
    absl::StatusOr<std::shared_ptr<const FrozenKv>> doc =
        FrozenKv::FromRows(pool_, positions, rows.data(), stream_tokens);
    EXPECT_TRUE(doc.ok()) << doc.status();
    return doc.ok() ? *doc : nullptr;
  }

  BlockPool pool_;
};

// Everything a segment says, for before/after comparisons.
struct SegmentState {
  std::vector<int32_t> pages;
  std::vector<int64_t> positions;
  std::vector<EntryVisibility> visibility{};
  std::vector<EntryInfo> infos{};
  std::vector<float> rows{};
  bool operator==(const SegmentState&) const = default;
};

TEST_F(SessionKvTest, AppendsGoToPinnedAndWindowPages) {
  SessionKv kv(pool_);
  EXPECT_EQ(kv.next_position(), 0);
  const EntryInfo sink{.kind = EntryKind::kSink, .serial = 0, .raw_index = 0};
  const EntryInfo raw{.kind = EntryKind::kRaw, .serial = 1, .raw_index = 1};
  const SlotRef a = Add(kv, Segment::kPinned, 0, {}, sink);
  const SlotRef b = Add(kv, Segment::kWindow, 1, {.from_clock = 0, .until_clock = 9}, raw);
  const SlotRef c = Add(kv, Segment::kPinned, 3);
  // Each segment has pages of its own; slots fill a page in order.
  EXPECT_EQ(a, (SlotRef{0, 0}));
  EXPECT_EQ(b, (SlotRef{1, 0}));
  EXPECT_EQ(c, (SlotRef{0, 1}));
  EXPECT_EQ(kv.pinned().pages(), (std::vector<int32_t>{0}));
  EXPECT_EQ(kv.window().pages(), (std::vector<int32_t>{1}));
  EXPECT_EQ(PositionsOf(kv.pinned()), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(PositionsOf(kv.window()), (std::vector<int64_t>{1}));
  EXPECT_EQ(kv.window().visibility(0), (EntryVisibility{.from_clock = 0, .until_clock = 9}));
  EXPECT_EQ(kv.pinned().visibility(0), EntryVisibility{});  // for good
  EXPECT_EQ(kv.pinned().info(0), sink);
  EXPECT_EQ(kv.window().info(0), raw);
  EXPECT_EQ(kv.next_position(), 4);
  EXPECT_EQ(kv.pages_held(), 2);
  EXPECT_EQ(kv.bytes_held(), 2 * kLayout.page_bytes());

  // A fifth pinned entry takes a second pinned page.
  for (int64_t p = 4; p < 7; ++p)
    Add(kv, Segment::kPinned, p);
  EXPECT_EQ(kv.pinned().pages(), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(kv.pinned().slot(4), (SlotRef{2, 0}));
  EXPECT_EQ(pool_.pages_in_use(), 3);
  EXPECT_EQ(RowsOf(kv.pinned())[0], 0.5f);
}

TEST_F(SessionKvTest, PositionsMustIncrease) {
  SessionKv kv(pool_);
  Add(kv, Segment::kPinned, 0);
  Add(kv, Segment::kWindow, 5);
  for (const auto& [segment, position] :
       {std::pair{Segment::kPinned, int64_t{5}}, std::pair{Segment::kWindow, int64_t{3}},
        std::pair{Segment::kPinned, int64_t{-1}}}) {
    const absl::StatusOr<SlotRef> slot = kv.Append(segment, position, {}, {});
    EXPECT_EQ(slot.status().code(), absl::StatusCode::kInvalidArgument) << position;
    EXPECT_THAT(slot.status().message(), HasSubstr("does not follow position 5")) << position;
  }
  EXPECT_EQ(kv.pinned().num_slots(), 1);
  EXPECT_EQ(kv.window().num_slots(), 1);
  EXPECT_EQ(kv.next_position(), 6);
  // A pooled entry (or a restore) may go anywhere; the stream still goes on after 5.
  ASSERT_TRUE(kv.Append(Segment::kPinned, 2, {}, {}, /*any_position=*/true).ok());
  EXPECT_EQ(PositionsOf(kv.pinned()), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(kv.next_position(), 6);
  EXPECT_EQ(kv.Append(Segment::kPinned, -1, {}, {}, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(kv.Append(Segment::kWindow, 6, {}, {}).ok());
}

TEST_F(SessionKvTest, AFullPoolLeavesTheKvUnchanged) {
  BlockPool small(MakeHostPageStorage(kLayout, 2 * kLayout.page_bytes()));
  SessionKv kv(small);
  for (int64_t p = 0; p < 4; ++p)
    ASSERT_TRUE(kv.Append(Segment::kPinned, p, {}, {}).ok());
  ASSERT_TRUE(kv.Append(Segment::kWindow, 4, {}, {}).ok());
  const absl::StatusOr<SlotRef> over = kv.Append(Segment::kPinned, 5, {}, {});
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(kv.pinned().num_slots(), 4);
  EXPECT_EQ(kv.next_position(), 5);
  // The window's page still has room.
  EXPECT_TRUE(kv.Append(Segment::kWindow, 5, {}, {}).ok());
}

TEST_F(SessionKvTest, WindowHeadPagesGoBackOnlyWhenEverySlotExpired) {
  SessionKv kv(pool_);
  // Window slots visible up to clocks 1..9: pages {1..4}, {5..8}, {9}.
  for (int64_t i = 0; i < 9; ++i)
    Add(kv, Segment::kWindow, i, {.from_clock = 0, .until_clock = i + 1});
  Add(kv, Segment::kPinned, 9);
  const std::vector<int32_t> pages = kv.window().pages();
  ASSERT_EQ(pages.size(), 3u);
  EXPECT_EQ(pool_.pages_in_use(), 4);

  kv.ReleaseExpired(4);  // slot 3 (until 4) is still visible at clock 4
  EXPECT_EQ(kv.window().pages(), pages);
  EXPECT_EQ(kv.window().num_slots(), 9);

  kv.ReleaseExpired(5);  // the head page's last slot ended at clock 4
  EXPECT_EQ(kv.window().pages(), (std::vector<int32_t>{pages[1], pages[2]}));
  EXPECT_EQ(pool_.RefCount(pages[0]), 0);
  EXPECT_EQ(pool_.pages_in_use(), 3);
  EXPECT_EQ(PositionsOf(kv.window()), (std::vector<int64_t>{4, 5, 6, 7, 8}));
  EXPECT_EQ(kv.window().slot(0), (SlotRef{pages[1], 0}));  // rows stay where they were
  EXPECT_EQ(RowsOf(kv.window())[0], 4.5f);
  EXPECT_EQ(kv.mark().window_end, 9);  // every window slot ever appended

  kv.ReleaseExpired(8);  // slot 7 (until 8) is still visible
  EXPECT_EQ(kv.window().num_slots(), 5);
  kv.ReleaseExpired(100);  // a partly filled tail page stays: appends go on into it
  EXPECT_EQ(kv.window().pages(), (std::vector<int32_t>{pages[2]}));
  EXPECT_EQ(PositionsOf(kv.window()), (std::vector<int64_t>{8}));
  Add(kv, Segment::kWindow, 10, {.from_clock = 0, .until_clock = 200});
  EXPECT_EQ(kv.window().slot(1), (SlotRef{pages[2], 1}));
  EXPECT_EQ(pool_.pages_in_use(), 2);
  // Pinned entries never go, whatever the clock.
  EXPECT_EQ(kv.pinned().num_slots(), 1);
}

TEST_F(SessionKvTest, TruncateToUndoesAppendsAndAttaches) {
  SessionKv kv(pool_);
  Add(kv, Segment::kPinned, 0);
  Add(kv, Segment::kWindow, 1);
  const SessionKv::Mark mark = kv.mark();
  const std::vector<float> pinned_rows = RowsOf(kv.pinned());
  const int64_t pages = pool_.pages_in_use();
  for (int64_t p = 2; p < 10; ++p)  // into the segments' pages, then new ones
    Add(kv, p % 2 == 0 ? Segment::kPinned : Segment::kWindow, p);
  EXPECT_EQ(kv.pinned().pages().size(), 2u);
  kv.Attach(Document({0, 1}, 3, 100.f), "doc");
  EXPECT_EQ(kv.next_position(), 13);
  EXPECT_GT(pool_.pages_in_use(), pages);

  kv.TruncateTo(mark);
  EXPECT_EQ(PositionsOf(kv.pinned()), (std::vector<int64_t>{0}));
  EXPECT_EQ(PositionsOf(kv.window()), (std::vector<int64_t>{1}));
  EXPECT_TRUE(kv.attached().empty());
  EXPECT_EQ(kv.next_position(), 2);
  EXPECT_EQ(RowsOf(kv.pinned()), pinned_rows);
  EXPECT_EQ(pool_.pages_in_use(), pages);  // the new pages and the document's went back
  // The stream goes on from the mark.
  EXPECT_EQ(Add(kv, Segment::kPinned, 2), (SlotRef{kv.pinned().pages()[0], 1}));
}

TEST_F(SessionKvTest, RollbackRestoresExactlyIncludingReleasedPages) {
  SessionKv kv(pool_);
  Add(kv, Segment::kPinned, 0, {}, {.kind = EntryKind::kSink, .serial = 0, .raw_index = 0});
  for (int64_t i = 1; i < 11; ++i) {
    Add(kv, Segment::kWindow, i, {.from_clock = 0, .until_clock = i + 2},
        {.kind = EntryKind::kRaw, .serial = i, .raw_index = i});
  }
  auto state = [&](const KvSegment& segment) {
    SegmentState s{.pages = segment.pages(), .positions = PositionsOf(segment)};
    for (int32_t i = 0; i < segment.num_slots(); ++i) {
      s.visibility.push_back(segment.visibility(i));
      s.infos.push_back(segment.info(i));
    }
    s.rows = RowsOf(segment);
    return s;
  };
  const SegmentState pinned = state(kv.pinned()), window = state(kv.window());
  const SessionKv::Mark mark = kv.mark();
  const int64_t pages = pool_.pages_in_use();

  kv.BeginTurn();
  for (int64_t i = 11; i < 15; ++i)
    Add(kv, Segment::kWindow, i, {.from_clock = 0, .until_clock = i + 2});
  Add(kv, Segment::kPinned, 15);
  kv.Attach(Document({0}, 2, 50.f), "doc");
  kv.ReleaseExpired(12);  // window pages of slots until 3..6 and 7..10 go
  EXPECT_EQ(kv.window().num_slots(), 6);
  // Released pages are held until the turn ends: a rollback may need them.
  EXPECT_EQ(kv.pages_held(), pool_.pages_in_use() - 1);  // all but the document's page
  kv.Rollback();

  EXPECT_EQ(state(kv.pinned()), pinned);
  EXPECT_EQ(state(kv.window()), window);
  EXPECT_TRUE(kv.attached().empty());
  EXPECT_EQ(kv.next_position(), mark.next_position);
  EXPECT_EQ(kv.mark().window_end, mark.window_end);
  EXPECT_EQ(kv.mark().pinned_slots, mark.pinned_slots);
  EXPECT_EQ(pool_.pages_in_use(), pages);

  // A turn that ends keeps its releases: the pages go back then.
  kv.BeginTurn();
  kv.ReleaseExpired(12);
  EXPECT_EQ(pool_.pages_in_use(), pages);
  kv.EndTurn();
  EXPECT_EQ(pool_.pages_in_use(), pages - 2);
  EXPECT_EQ(PositionsOf(kv.window()), (std::vector<int64_t>{9, 10}));
  // After it, a rollback of a new turn brings back only that turn's changes.
  kv.BeginTurn();
  Add(kv, Segment::kWindow, 11);
  kv.Rollback();
  EXPECT_EQ(PositionsOf(kv.window()), (std::vector<int64_t>{9, 10}));
  EXPECT_EQ(kv.next_position(), 11);
}

TEST_F(SessionKvTest, ForkSharesPagesAndCopiesOnWrite) {
  auto parent = std::make_unique<SessionKv>(pool_);
  for (int64_t p = 0; p < 6; ++p)
    Add(*parent, Segment::kPinned, p);  // pages: 4 slots + 2
  Add(*parent, Segment::kWindow, 6, {.from_clock = 0, .until_clock = 20});
  parent->Attach(Document({0, 1}, 2, 10.f), "doc");
  const std::vector<float> parent_rows = RowsOf(parent->pinned());
  const std::vector<int32_t> parent_pages = parent->pinned().pages();
  const int64_t pages = pool_.pages_in_use();

  absl::StatusOr<std::unique_ptr<SessionKv>> fork = parent->Fork();
  ASSERT_TRUE(fork.ok()) << fork.status();
  SessionKv& child = **fork;
  EXPECT_EQ(pool_.pages_in_use(), pages);  // nothing copied
  EXPECT_EQ(child.pinned().pages(), parent_pages);
  for (int32_t page : parent_pages)
    EXPECT_EQ(pool_.RefCount(page), 2);
  EXPECT_EQ(pool_.RefCount(child.window().pages()[0]), 2);
  EXPECT_EQ(child.attached().size(), 1u);
  EXPECT_EQ(child.attached()[0].kv, parent->attached()[0].kv);  // one document
  EXPECT_EQ(child.next_position(), parent->next_position());

  // The child's append into the shared tail page copies that page first.
  const SlotRef slot = Add(child, Segment::kPinned, 9);
  EXPECT_NE(slot.page, parent_pages[1]);
  EXPECT_EQ(slot.slot, 2);
  EXPECT_EQ(child.pinned().pages()[0], parent_pages[0]);  // the full page stays shared
  EXPECT_EQ(pool_.RefCount(parent_pages[0]), 2);
  EXPECT_EQ(pool_.RefCount(parent_pages[1]), 1);
  EXPECT_EQ(pool_.RefCount(slot.page), 1);
  // The copy holds the parent's rows; the parent's rows are untouched by the child's write.
  std::vector<float> child_rows = RowsOf(child.pinned());
  ASSERT_EQ(child_rows.size(), parent_rows.size() + kRowFloats);
  EXPECT_EQ(RowsOf(parent->pinned()), parent_rows);
  EXPECT_EQ(PositionsOf(parent->pinned()), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(PositionsOf(child.pinned()), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 9}));
  for (int32_t i = 0; i < 6; ++i) {  // K then V of each entry
    EXPECT_EQ(child_rows[i * 2], parent_rows[i * 2]);
    EXPECT_EQ(child_rows[7 * 2 + i * 2], parent_rows[6 * 2 + i * 2]);
  }
  // The parent's own appends do not copy once it holds its page alone.
  const SlotRef parent_slot = Add(*parent, Segment::kPinned, 9);
  EXPECT_EQ(parent_slot, (SlotRef{parent_pages[1], 2}));
  EXPECT_EQ(RowsOf(child.pinned()), child_rows);

  // Each holder's pages go back when the last holder goes.
  fork->reset();
  EXPECT_EQ(pool_.RefCount(parent_pages[0]), 1);
  parent.reset();
  EXPECT_EQ(pool_.pages_in_use(), 0);

  SessionKv in_turn(pool_);
  in_turn.BeginTurn();
  EXPECT_EQ(in_turn.Fork().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SessionKvTest, ADocumentIsOneSetOfPagesForEverySession) {
  SessionKv source(pool_);
  for (int64_t p = 0; p < 5; ++p)
    Add(source, Segment::kPinned, p);
  EntryList entries;
  for (int32_t i : {0, 2, 4}) {
    entries.slots.push_back(source.pinned().slot(i));
    entries.positions.push_back(source.pinned().position(i));
    entries.infos.push_back(source.pinned().info(i));
  }
  const int64_t before = pool_.pages_in_use();
  absl::StatusOr<std::shared_ptr<const FrozenKv>> copy = FrozenKv::CopyOf(pool_, entries, 5);
  ASSERT_TRUE(copy.ok()) << copy.status();
  std::shared_ptr<const FrozenKv> doc = *std::move(copy);
  EXPECT_EQ(doc->size(), 3);
  EXPECT_EQ(doc->stream_tokens(), 5);
  EXPECT_EQ(doc->bytes(), kLayout.page_bytes());
  EXPECT_EQ(pool_.pages_in_use(), before + 1);
  EXPECT_EQ(PositionsOf(doc->entries()), (std::vector<int64_t>{0, 2, 4}));
  // Its rows are copies of the listed entries' rows, on pages of its own.
  std::vector<float> want(3 * kRowFloats);
  source.pool().storage().ExportRows(entries.slots, want.data());
  EXPECT_EQ(RowsOf(doc->entries()), want);
  for (int32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(doc->entries().visibility(i), EntryVisibility{});
  }

  auto a = std::make_unique<SessionKv>(pool_);
  auto b = std::make_unique<SessionKv>(pool_);
  Add(*a, Segment::kPinned, 0);
  a->Attach(doc, "doc");
  b->Attach(doc, "doc");
  EXPECT_EQ(a->next_position(), 6);
  EXPECT_EQ(b->next_position(), 5);
  EXPECT_EQ(a->attached()[0].position_offset, 1);
  EXPECT_EQ(b->attached()[0].position_offset, 0);
  EXPECT_EQ(a->attached()[0].label, "doc");
  const int32_t doc_page = doc->entries().pages()[0];
  EXPECT_EQ(pool_.pages_in_use(), before + 2);  // the document once, plus a's own page
  EXPECT_EQ(pool_.RefCount(doc_page), 1);       // held by the FrozenKv, shared by pointer
  EXPECT_EQ(a->pages_held(), 1);                // a document's pages are not the session's

  doc.reset();
  a.reset();
  EXPECT_EQ(pool_.RefCount(doc_page), 1);  // b still attaches it
  EXPECT_EQ(pool_.pages_in_use(), before + 1);
  b.reset();
  EXPECT_EQ(pool_.RefCount(doc_page), 0);  // the last holder went
  EXPECT_EQ(pool_.pages_in_use(), before);
}

TEST_F(SessionKvTest, ViewsArePinnedThenWindowThenDocuments) {
  SessionKv kv(pool_);
  Add(kv, Segment::kPinned, 0);
  Add(kv, Segment::kWindow, 1, {.from_clock = 2, .until_clock = 7});
  Add(kv, Segment::kPinned, 2);
  const auto first = Document({0, 1, 2, 3, 4}, 6, 1.f);
  const auto second = Document({1}, 2, 2.f);
  kv.Attach(first, "first");
  Add(kv, Segment::kWindow, 9, {.from_clock = 0, .until_clock = EntryVisibility::kForever});
  kv.Attach(second, "second");
  EXPECT_EQ(kv.next_position(), 12);

  std::vector<KvSegmentView> views;
  kv.AppendViews(views);
  ASSERT_EQ(views.size(), 4u);
  const KvSegmentView& pinned = views[0];
  EXPECT_FALSE(pinned.shared);
  EXPECT_EQ(pinned.num_slots, 2);
  EXPECT_EQ(pinned.page_ids, kv.pinned().pages().data());
  EXPECT_EQ(std::vector<int32_t>(pinned.positions, pinned.positions + 2),
            (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(pinned.visible_until[0], kVisibleForever);
  const KvSegmentView& window = views[1];
  EXPECT_FALSE(window.shared);
  EXPECT_EQ(window.num_slots, 2);
  EXPECT_EQ(std::vector<int32_t>(window.positions, window.positions + 2),
            (std::vector<int32_t>{1, 9}));
  EXPECT_EQ(window.visible_from[0], 2);
  EXPECT_EQ(window.visible_until[0], 7);
  EXPECT_EQ(window.visible_until[1], kVisibleForever);
  EXPECT_EQ(window.page_ids[0], kv.window().slot(0).page);
  for (const auto& [view, doc, offset] :
       {std::tuple{&views[2], first.get(), 3}, std::tuple{&views[3], second.get(), 10}}) {
    EXPECT_TRUE(view->shared);
    EXPECT_EQ(view->rope_offset, offset);
    EXPECT_EQ(view->num_slots, doc->size());
    EXPECT_EQ(view->page_ids, doc->entries().pages().data());
    EXPECT_EQ(view->positions[0], doc->entries().position(0));
  }
  // Appending adds to what is there.
  kv.AppendViews(views);
  EXPECT_EQ(views.size(), 8u);
}

// Parking copies the session's own pages out and gives them back; unparking brings every row
// back bit for bit into new pages, with the per-slot arrays and documents as they were.
TEST_F(SessionKvTest, ParkGivesPagesBackAndUnparkRestoresEveryRow) {
  SessionKv kv(pool_);
  for (int64_t p = 0; p < 6; ++p)
    Add(kv, Segment::kPinned, p);
  for (int64_t p = 6; p < 15; ++p)
    Add(kv, Segment::kWindow, p, {.from_clock = 0, .until_clock = p + 1});
  kv.Attach(Document({0, 1, 2}, 3, 40.f), "doc");
  // A NaN and a negative zero must come back as they were, bit for bit.
  const float odd[kRowFloats] = {std::numeric_limits<float>::quiet_NaN(), -0.0f, 1e-40f, 3.f};
  const SlotRef odd_slot = kv.window().slot(2);
  pool_.storage().ImportRows(std::span(&odd_slot, 1), odd);
  auto bits = [&](const KvSegment& segment) {
    const std::vector<float> rows = RowsOf(segment);
    std::vector<uint32_t> out(rows.size());
    std::memcpy(out.data(), rows.data(), rows.size() * sizeof(float));
    return out;
  };
  const std::vector<uint32_t> pinned_bits = bits(kv.pinned()), window_bits = bits(kv.window());
  const std::vector<int64_t> pinned_positions = PositionsOf(kv.pinned());
  const int64_t own_pages = kv.pages_held();
  const int64_t document_pages = 1;
  ASSERT_EQ(pool_.pages_in_use(), own_pages + document_pages);
  // Another holder of the first page (a fork's share) keeps it through the park.
  const int32_t shared = kv.pinned().pages()[0];
  pool_.Retain(shared);

  ASSERT_TRUE(kv.Park().ok());
  EXPECT_TRUE(kv.parked());
  EXPECT_EQ(kv.parked_bytes(), own_pages * kLayout.page_bytes());
  EXPECT_EQ(kv.pages_held(), 0);
  EXPECT_EQ(pool_.pages_in_use(), document_pages + 1);  // the document and the shared page
  EXPECT_EQ(pool_.RefCount(shared), 1);
  EXPECT_EQ(kv.Append(Segment::kPinned, 20, {}, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(kv.Fork().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(kv.Park().code(), absl::StatusCode::kFailedPrecondition);
  // Other sessions use the pages meanwhile (they are zeroed or overwritten).
  SessionKv other(pool_);
  for (int64_t p = 0; p < 12; ++p)
    Add(other, Segment::kPinned, 100 + p);

  ASSERT_TRUE(kv.Unpark().ok());
  EXPECT_FALSE(kv.parked());
  EXPECT_EQ(kv.parked_bytes(), 0);
  EXPECT_EQ(kv.pages_held(), own_pages);
  EXPECT_EQ(bits(kv.pinned()), pinned_bits);
  EXPECT_EQ(bits(kv.window()), window_bits);
  EXPECT_EQ(PositionsOf(kv.pinned()), pinned_positions);
  EXPECT_EQ(kv.window().visibility(3), (EntryVisibility{.from_clock = 0, .until_clock = 10}));
  ASSERT_EQ(kv.attached().size(), 1u);
  for (int32_t page : kv.pinned().pages())
    EXPECT_EQ(pool_.RefCount(page), 1);  // its own copies now
  // It goes on as before: appends, window releases.
  Add(kv, Segment::kWindow, 20, {.from_clock = 0, .until_clock = 30});
  kv.ReleaseExpired(11);  // the first window page (clocks up to 7..10) goes back
  EXPECT_EQ(kv.window().num_slots(), 10 - 4);
  pool_.Release(shared);
}

TEST_F(SessionKvTest, ParkingIsRefusedInATurnAndUnparkWaitsForRoom) {
  BlockPool small(MakeHostPageStorage(kLayout, 3 * kLayout.page_bytes()));
  SessionKv kv(small);
  for (int64_t p = 0; p < 8; ++p)
    ASSERT_TRUE(kv.Append(Segment::kPinned, p, {}, {}).ok());
  kv.BeginTurn();
  EXPECT_EQ(kv.Park().code(), absl::StatusCode::kFailedPrecondition);
  kv.EndTurn();
  ASSERT_TRUE(kv.Park().ok());
  EXPECT_EQ(small.pages_in_use(), 0);
  // The pool fills up while it is parked: unparking fails, changes nothing, and works later.
  SessionKv hog(small);
  for (int64_t p = 0; p < 8; ++p)
    ASSERT_TRUE(hog.Append(Segment::kPinned, p, {}, {}).ok());
  const absl::Status full = kv.Unpark();
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_TRUE(kv.parked());
  EXPECT_EQ(small.pages_in_use(), 2);
  hog.TruncateTo({});
  ASSERT_TRUE(kv.Unpark().ok());
  EXPECT_EQ(kv.pages_held(), 2);
  // An empty KV parks and unparks too.
  SessionKv empty(small);
  ASSERT_TRUE(empty.Park().ok());
  ASSERT_TRUE(empty.Unpark().ok());
  EXPECT_EQ(empty.pages_held(), 0);
}

}  // namespace
}  // namespace gistmem::memory
