// memory::SessionKv's change tracking (first_slot, generation, RewritesSince, ids and the
// residency token) and cuda::PlanMirrorCopy / StageMirrorCopy, the host half of the CUDA
// engine's device mirrors of page tables and per-slot arrays, all on the CPU:
//   - every mutating operation marks what it changes, and appends and head releases mark
//     nothing (a mirror sees those by itself);
//   - long random scripts (appends to both segments, releases, truncations, turns rolled back
//     or kept, forks with copy on write, park and unpark, documents) keep a mirror (the
//     engine's plan and staging, applied to host arrays) equal to the segment after every
//     update, and every change between two updates lies within what RewritesSince reports;
//   - a decode loop copies one slot a step, not the whole segment.
#include "model/backend/cuda/kv_mirror_plan.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "memory/block_pool.h"
#include "memory/entry.h"
#include "memory/kv_layout.h"
#include "memory/session_kv.h"

namespace gistmem::cuda {
namespace {

using memory::BlockPool;
using memory::EntryVisibility;
using memory::KvSegment;
using memory::SessionKv;
using Segment = SessionKv::Segment;

constexpr int32_t kBlock = 4;
constexpr memory::PageLayout kLayout{
    .block_size = kBlock, .num_layers = 1, .kv_dim = 2, .element_bytes = 4};

class ChangeTrackingTest : public ::testing::Test {
 protected:
  ChangeTrackingTest() : pool_(memory::MakeHostPageStorage(kLayout, 4096 * kLayout.page_bytes())) {}

  void Add(SessionKv& kv, Segment segment, EntryVisibility visibility = {}) {
    ASSERT_TRUE(kv.Append(segment, kv.next_position(), visibility, {}).ok());
  }

  BlockPool pool_;
};

TEST_F(ChangeTrackingTest, AppendsAndHeadReleasesMarkNothing) {
  SessionKv kv(pool_);
  for (int i = 0; i < 10; ++i) {
    Add(kv, Segment::kPinned);
    Add(kv, Segment::kWindow, {.from_clock = 0, .until_clock = i});
  }
  EXPECT_EQ(kv.pinned().generation(), 0u);
  EXPECT_EQ(kv.window().generation(), 0u);
  EXPECT_EQ(kv.window().first_slot(), 0);
  kv.ReleaseExpired(9);  // slots 0..8 expired: two whole pages go
  EXPECT_EQ(kv.window().first_slot(), 2 * kBlock);
  EXPECT_EQ(kv.window().num_slots(), 2);
  EXPECT_EQ(kv.window().generation(), 0u);
  const KvSegment::Rewrites none = kv.window().RewritesSince(0);
  EXPECT_TRUE(none.known);
  EXPECT_EQ(none.slot_from, KvSegment::kNone);
  EXPECT_EQ(none.page_from, KvSegment::kNone);
}

TEST_F(ChangeTrackingTest, TruncationsAndRollbacksMarkWhereTheyBegin) {
  SessionKv kv(pool_);
  for (int i = 0; i < 13; ++i)
    Add(kv, Segment::kWindow, {.from_clock = 0, .until_clock = i});
  kv.ReleaseExpired(4);  // page 0 (slots 0..3) goes: the window starts at absolute slot 4
  ASSERT_EQ(kv.window().first_slot(), 4);
  const SessionKv::Mark mark = kv.mark();
  const uint64_t g = kv.window().generation();
  kv.TruncateTo(mark);  // nothing to undo: nothing marked
  EXPECT_EQ(kv.window().generation(), g);
  Add(kv, Segment::kWindow);
  Add(kv, Segment::kWindow);
  Add(kv, Segment::kWindow);  // absolute slots 13..15, page 3
  Add(kv, Segment::kWindow);  // absolute slot 16: a fresh page 4
  kv.TruncateTo(mark);
  EXPECT_EQ(kv.window().generation(), g + 1);
  KvSegment::Rewrites r = kv.window().RewritesSince(g);
  EXPECT_TRUE(r.known);
  EXPECT_EQ(r.slot_from, 13);  // the first slot undone
  EXPECT_EQ(r.page_from, 4);   // page 3 (slots 12..15) stays, page 4 went

  // A turn that releases the head and is rolled back: the head comes back, marked.
  kv.BeginTurn();
  for (int i = 0; i < 4; ++i)
    Add(kv, Segment::kWindow);
  kv.ReleaseExpired(100);  // every window page whose slots all expired
  ASSERT_GT(kv.window().first_slot(), 4);
  const uint64_t before_rollback = kv.window().generation();
  kv.Rollback();
  EXPECT_EQ(kv.window().first_slot(), 4);
  r = kv.window().RewritesSince(before_rollback);
  EXPECT_TRUE(r.known);
  EXPECT_EQ(r.slot_from, 4);
  EXPECT_EQ(r.page_from, 1);
  EXPECT_EQ(kv.window().num_slots(), 9);
}

TEST_F(ChangeTrackingTest, CopyOnWriteAndUnparkMarkReplacedPages) {
  SessionKv kv(pool_);
  for (int i = 0; i < 6; ++i)
    Add(kv, Segment::kPinned);  // pages 0 and 1, the tail half full
  absl::StatusOr<std::unique_ptr<SessionKv>> fork = kv.Fork();
  ASSERT_TRUE(fork.ok());
  EXPECT_NE((*fork)->id(), kv.id());
  const uint64_t g = kv.pinned().generation();
  Add(kv, Segment::kPinned);  // into the shared tail: copied to a page of its own
  EXPECT_EQ(kv.pinned().generation(), g + 1);
  const KvSegment::Rewrites r = kv.pinned().RewritesSince(g);
  EXPECT_EQ(r.slot_from, KvSegment::kNone);
  EXPECT_EQ(r.page_from, 1);

  const uint64_t id = kv.id();
  const std::weak_ptr<const void> residency = kv.residency();
  EXPECT_FALSE(residency.expired());
  const uint64_t parked_at = kv.pinned().generation();
  ASSERT_TRUE(kv.Park().ok());
  EXPECT_TRUE(residency.expired());
  EXPECT_EQ(kv.id(), 0u);
  ASSERT_TRUE(kv.Unpark().ok());
  EXPECT_NE(kv.id(), 0u);
  EXPECT_NE(kv.id(), id);
  EXPECT_FALSE(kv.residency().expired());
  EXPECT_EQ(kv.pinned().RewritesSince(parked_at).page_from, 0);
  EXPECT_EQ(kv.pinned().RewritesSince(parked_at).slot_from, KvSegment::kNone);

  std::weak_ptr<const void> fork_residency = (*fork)->residency();
  fork->reset();
  EXPECT_TRUE(fork_residency.expired());
}

TEST_F(ChangeTrackingTest, TooManyChangesAgoIsUnknown) {
  SessionKv kv(pool_);
  const SessionKv::Mark empty = kv.mark();
  for (int i = 0; i <= KvSegment::kRewriteHistory; ++i) {
    Add(kv, Segment::kPinned);
    kv.TruncateTo(empty);
  }
  EXPECT_FALSE(kv.pinned().RewritesSince(0).known);
  EXPECT_TRUE(kv.pinned().RewritesSince(1).known);
  EXPECT_FALSE(kv.pinned().RewritesSince(kv.pinned().generation() + 1).known);
}

// A device mirror simulated in host memory: DeviceKvMirrors' plan and staging (the same
// functions), with the staged runs applied on the host instead of by the copy kernel.
struct SimulatedMirror {
  MirrorState state;
  std::vector<int32_t> arrays;  // stands for the device arrays
  memory::KvSegmentView view;   // what StageMirrorCopy returned
  int64_t slots_copied = 0, reallocations = 0;

  bool Inside(const int32_t* p, int64_t count) const {
    return p >= arrays.data() && p + count <= arrays.data() + arrays.size();
  }

  void Update(const KvSegment& segment) {
    const MirrorCopy copy = PlanMirrorCopy(state, segment, kBlock);
    if (copy.reallocate) {
      ++reallocations;
      arrays.assign(MirrorInts(copy.state.capacity, kBlock), -7);  // garbage, as new memory
    }
    StagedInt32s staged;
    view = StageMirrorCopy(copy, segment, arrays.data(), staged);
    for (const Int32Run& run : staged.runs)
      ASSERT_TRUE(Inside(run.dest, run.count)) << "a copy lands outside the arrays";
    staged.ApplyOnHost();
    slots_copied += copy.slot_end - copy.slot_begin;
    state = copy.state;
  }

  // The view StageMirrorCopy gave reads the host segment's values.
  void ExpectEquals(const KvSegment& segment, const std::string& what) const {
    const memory::KvSegmentView host = segment.View();
    ASSERT_EQ(view.num_slots, host.num_slots) << what;
    if (host.num_slots == 0) return;
    const int64_t n = host.num_slots, pages = static_cast<int64_t>(segment.pages().size());
    ASSERT_TRUE(Inside(view.positions, n) && Inside(view.visible_from, n) &&
                Inside(view.visible_until, n) && Inside(view.page_ids, pages))
        << what;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(view.positions[i], host.positions[i]) << what << " slot " << i;
      ASSERT_EQ(view.visible_from[i], host.visible_from[i]) << what << " slot " << i;
      ASSERT_EQ(view.visible_until[i], host.visible_until[i]) << what << " slot " << i;
    }
    for (int64_t p = 0; p < pages; ++p)
      ASSERT_EQ(view.page_ids[p], host.page_ids[p]) << what << " page " << p;
  }
};

// A segment's arrays by absolute slot and page, to find what really changed between updates.
struct Snapshot {
  int64_t first = 0;
  uint64_t generation = 0;
  std::vector<int32_t> positions, from, until, pages;

  explicit Snapshot(const KvSegment& s)
      : first(s.first_slot()), generation(s.generation()), pages(s.pages()) {
    const memory::KvSegmentView v = s.View();
    positions.assign(v.positions, v.positions + v.num_slots);
    from.assign(v.visible_from, v.visible_from + v.num_slots);
    until.assign(v.visible_until, v.visible_until + v.num_slots);
  }
};

// Every slot and page that exists both before and after (or came back in front) and differs
// lies at or past what RewritesSince(before's generation) reports.
void ExpectChangesReported(const Snapshot& before, const KvSegment& now, const std::string& what) {
  const KvSegment::Rewrites r = now.RewritesSince(before.generation);
  if (!r.known) return;  // the mirror copies everything
  const Snapshot after(now);
  const int64_t before_end = before.first + static_cast<int64_t>(before.positions.size());
  const int64_t after_end = after.first + static_cast<int64_t>(after.positions.size());
  for (int64_t a = after.first; a < std::min(before_end, after_end); ++a) {
    const size_t i = a - after.first;
    const bool same = a >= before.first &&
                      after.positions[i] == before.positions[a - before.first] &&
                      after.from[i] == before.from[a - before.first] &&
                      after.until[i] == before.until[a - before.first];
    if (!same) {
      EXPECT_GE(a, r.slot_from) << what << ": slot " << a << " changed unreported";
    }
  }
  const int64_t before_first_page = before.first / kBlock, after_first_page = after.first / kBlock;
  const int64_t before_pages_end = before_first_page + static_cast<int64_t>(before.pages.size());
  const int64_t after_pages_end = after_first_page + static_cast<int64_t>(after.pages.size());
  for (int64_t p = after_first_page; p < std::min(before_pages_end, after_pages_end); ++p) {
    const bool same = p >= before_first_page &&
                      after.pages[p - after_first_page] == before.pages[p - before_first_page];
    if (!same) {
      EXPECT_GE(p, r.page_from) << what << ": page " << p << " changed unreported";
    }
  }
}

TEST_F(ChangeTrackingTest, RandomScriptsKeepASimulatedMirrorExact) {
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    auto kv = std::make_unique<SessionKv>(pool_);
    SimulatedMirror pinned, window;
    uint64_t mirrored_id = kv->id();
    std::vector<SessionKv::Mark> marks;
    std::vector<std::unique_ptr<SessionKv>> forks;
    std::shared_ptr<const memory::FrozenKv> doc;
    int64_t clock = 0;
    bool in_turn = false;
    auto snapshot = [&] { return std::pair{Snapshot(kv->pinned()), Snapshot(kv->window())}; };
    auto [pinned_before, window_before] = snapshot();
    for (int op = 0; op < 400; ++op) {
      const std::string what = "seed " + std::to_string(seed) + " op " + std::to_string(op);
      const int choice = static_cast<int>(rng() % 100);
      if (kv->parked()) {
        ASSERT_TRUE(kv->Unpark().ok());
      } else if (choice < 40) {
        ++clock;
        Add(*kv, rng() % 3 == 0 ? Segment::kPinned : Segment::kWindow,
            {.from_clock = 0, .until_clock = clock + static_cast<int64_t>(rng() % 12)});
      } else if (choice < 50) {
        kv->ReleaseExpired(clock);
      } else if (choice < 58) {
        marks.push_back(kv->mark());
      } else if (choice < 64 && !marks.empty()) {
        const SessionKv::Mark mark = marks[rng() % marks.size()];
        marks.clear();  // a mark is only good until the KV goes behind it
        kv->TruncateTo(mark);
      } else if (choice < 70 && !in_turn) {
        marks.clear();
        kv->BeginTurn();
        in_turn = true;
      } else if (choice < 74 && in_turn) {
        marks.clear();
        kv->Rollback();
        in_turn = false;
      } else if (choice < 78 && in_turn) {
        kv->EndTurn();
        in_turn = false;
      } else if (choice >= 78 && choice < 88 && in_turn) {
        kv->EndTurn();  // forks, parking and documents wait for the turn's end
        in_turn = false;
      } else if (choice >= 78 && choice < 82) {
        absl::StatusOr<std::unique_ptr<SessionKv>> fork = kv->Fork();
        ASSERT_TRUE(fork.ok()) << fork.status();
        // Go on with either: the other keeps the shared pages (copy on write for both).
        if (rng() % 2) std::swap(*fork, kv);
        forks.push_back(*std::move(fork));
        marks.clear();
      } else if (choice >= 78 && choice < 86) {
        ASSERT_TRUE(kv->Park().ok());
        marks.clear();
      } else if (choice >= 78 && choice < 88) {
        absl::StatusOr<std::shared_ptr<const memory::FrozenKv>> copy =
            memory::FrozenKv::CopyOf(pool_, {}, 3);
        ASSERT_TRUE(copy.ok());
        doc = *copy;
        kv->Attach(doc, "doc");
      } else if (choice >= 88 || op % 7 == 0) {
        // A step: the mirror catches up (a new residency starts a new mirror).
        if (kv->id() != mirrored_id) {
          pinned = window = SimulatedMirror();
          mirrored_id = kv->id();
        } else {
          ExpectChangesReported(pinned_before, kv->pinned(), what + " pinned");
          ExpectChangesReported(window_before, kv->window(), what + " window");
        }
        pinned.Update(kv->pinned());
        window.Update(kv->window());
        pinned.ExpectEquals(kv->pinned(), what + " pinned");
        window.ExpectEquals(kv->window(), what + " window");
        std::tie(pinned_before, window_before) = snapshot();
      }
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

// The bench's decode loop (one slot reserved, the step, the slot dropped) and a real decode
// (slots kept): each update copies the one new slot, plus a whole copy when arrays grow.
TEST_F(ChangeTrackingTest, DecodeCopiesOneSlotAStep) {
  SessionKv kv(pool_);
  for (int i = 0; i < 1000; ++i)
    Add(kv, Segment::kPinned);
  SimulatedMirror mirror;
  mirror.Update(kv.pinned());
  EXPECT_EQ(mirror.slots_copied, 1000);
  for (int step = 0; step < 100; ++step) {
    const SessionKv::Mark mark = kv.mark();
    Add(kv, Segment::kPinned);
    mirror.Update(kv.pinned());
    mirror.ExpectEquals(kv.pinned(), "reserved");
    kv.TruncateTo(mark);
  }
  EXPECT_EQ(mirror.slots_copied, 1100);
  mirror.slots_copied = 0;
  const int64_t reallocations = mirror.reallocations;
  for (int step = 0; step < 2000; ++step) {
    Add(kv, Segment::kPinned);
    mirror.Update(kv.pinned());
  }
  mirror.ExpectEquals(kv.pinned(), "decoded");
  EXPECT_EQ(mirror.reallocations, reallocations + 1);  // 2000 slots of room, then 6000
  EXPECT_LT(mirror.slots_copied, 2000 + 3000 + 10);
}

}  // namespace
}  // namespace gistmem::cuda
