// RadosStore against a real Ceph cluster (tests/cluster/start-ceph.sh; GISTMEM_CEPH_CONF and
// GISTMEM_CEPH_POOL name it). Without them the test fails: the cluster label is for machines
// where Ceph runs, and CI starts it.
//
// Two RadosStore objects on one pool stand for two gistmem servers: what one writes, the other
// reads; fencing decides which of them may commit.
#include "store/rados_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/unit/store_test_support.h"

namespace gistmem::store {
namespace {

using ::testing::ElementsAre;
using testing::MakeSegment;
using testing::MakeSession;
using testing::NextExchange;

std::unique_ptr<RadosStore> OpenStore() {
  const char* conf = std::getenv("GISTMEM_CEPH_CONF");
  const char* pool = std::getenv("GISTMEM_CEPH_POOL");
  if (conf == nullptr || pool == nullptr) {
    ADD_FAILURE() << "GISTMEM_CEPH_CONF and GISTMEM_CEPH_POOL must name a running cluster "
                     "(tests/cluster/start-ceph.sh)";
    return nullptr;
  }
  absl::StatusOr<std::unique_ptr<RadosStore>> store =
      RadosStore::Open({.pool = pool, .conf_file = conf, .op_timeout = absl::Seconds(20)});
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

// Every test works in a tenant of its own, so runs on one pool never meet.
std::string FreshTenant() {
  static std::mt19937_64 generator{std::random_device{}()};
  return absl::StrCat("t", generator() % 1000000000);
}

class RadosStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = OpenStore();
    b_ = OpenStore();
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
  }
  const std::string tenant_ = FreshTenant();
  std::unique_ptr<RadosStore> a_, b_;  // two servers on one pool
};

TEST_F(RadosStoreTest, CreateGetListDelete) {
  ASSERT_TRUE(a_->CreateSession(MakeSession(tenant_, "s1")).ok());
  ASSERT_TRUE(a_->CreateSession(MakeSession(tenant_, "s2")).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(b_->CreateSession(MakeSession(tenant_, "s1"))));
  absl::StatusOr<SessionRecord> got = b_->GetSession(tenant_, "s1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->system_prompt(), "You are terse.");
  EXPECT_TRUE(absl::IsNotFound(b_->GetSession(tenant_, "nope").status()));

  absl::StatusOr<SessionPage> page = b_->ListSessions(tenant_, 1, "");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->sessions.size(), 1u);
  EXPECT_EQ(page->sessions[0].session_id(), "s1");
  ASSERT_FALSE(page->next_page_token.empty());
  page = b_->ListSessions(tenant_, 1, page->next_page_token);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->sessions.size(), 1u);
  EXPECT_EQ(page->sessions[0].session_id(), "s2");
  EXPECT_TRUE(page->next_page_token.empty());

  ASSERT_TRUE(b_->DeleteSession(tenant_, "s1").ok());
  EXPECT_TRUE(absl::IsNotFound(a_->GetSession(tenant_, "s1").status()));
  EXPECT_TRUE(absl::IsNotFound(a_->DeleteSession(tenant_, "s1")));
  page = a_->ListSessions(tenant_, 10, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->sessions.size(), 1u);
  EXPECT_EQ(page->sessions[0].session_id(), "s2");
}

TEST_F(RadosStoreTest, CommitsAreReadByTheOtherServer) {
  SessionRecord session = MakeSession(tenant_, "s");
  ASSERT_TRUE(a_->CreateSession(session).ok());
  absl::StatusOr<uint64_t> epoch = a_->AcquireSession(tenant_, "s");
  ASSERT_TRUE(epoch.ok()) << epoch.status();
  for (int i = 0; i < 3; ++i) {
    TurnCommit commit = NextExchange(session, 100000);
    commit.epoch = *epoch;
    ASSERT_TRUE(a_->CommitTurn(commit).ok()) << i;
    session = commit.session;
  }
  absl::StatusOr<std::vector<TurnRecord>> turns = b_->LoadTranscript(tenant_, "s");
  ASSERT_TRUE(turns.ok()) << turns.status();
  ASSERT_EQ(turns->size(), 6u);
  EXPECT_EQ((*turns)[5].text(), "answer 5");
  // Gists 0, 2, 4 stay; windows 1 and 3 were replaced by 5.
  absl::StatusOr<std::vector<KvSegment>> segments = b_->LoadKvSegments(tenant_, "s");
  ASSERT_TRUE(segments.ok()) << segments.status();
  std::vector<uint64_t> seqs;
  for (const KvSegment& segment : *segments) {
    seqs.push_back(segment.seq);
    EXPECT_EQ(segment.payload, MakeSegment(segment.seq, "x", 100000).payload);
  }
  EXPECT_THAT(seqs, ElementsAre(0, 2, 4, 5));
  absl::StatusOr<SessionStorageStats> stats = b_->Stats(tenant_, "s");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->kv_segments, 4);
  EXPECT_EQ(stats->transcript_turns, 6);
  // The replaced windows' objects are gone already, not left for the collector.
  absl::StatusOr<std::vector<std::string>> objects =
      a_->pool().List(absl::StrCat("seg/", tenant_, "/s/"));
  ASSERT_TRUE(objects.ok());
  EXPECT_EQ(objects->size(), 4u);
}

TEST_F(RadosStoreTest, AStaleEpochCannotCommitAndLeavesNothingServed) {
  SessionRecord session = MakeSession(tenant_, "s");
  ASSERT_TRUE(a_->CreateSession(session).ok());
  absl::StatusOr<uint64_t> a_epoch = a_->AcquireSession(tenant_, "s");
  ASSERT_TRUE(a_epoch.ok());
  TurnCommit first = NextExchange(session);
  first.epoch = *a_epoch;
  ASSERT_TRUE(a_->CommitTurn(first).ok());

  // B takes the session over; A, paused meanwhile, still holds its epoch.
  absl::StatusOr<uint64_t> b_epoch = b_->AcquireSession(tenant_, "s");
  ASSERT_TRUE(b_epoch.ok());
  EXPECT_EQ(*b_epoch, *a_epoch + 1);
  TurnCommit late = NextExchange(first.session, 5000);
  late.epoch = *a_epoch;
  absl::Status refused = a_->CommitTurn(late);
  EXPECT_TRUE(absl::IsAborted(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), ::testing::HasSubstr("owned by another server"));

  // B's own commit of the same turn number goes through; A's is nowhere.
  TurnCommit mine = NextExchange(first.session);
  mine.turns[0].set_text("B's question");
  mine.epoch = *b_epoch;
  ASSERT_TRUE(b_->CommitTurn(mine).ok());
  absl::StatusOr<std::vector<TurnRecord>> turns = a_->LoadTranscript(tenant_, "s");
  ASSERT_TRUE(turns.ok());
  ASSERT_EQ(turns->size(), 4u);
  EXPECT_EQ((*turns)[2].text(), "B's question");
  absl::StatusOr<std::vector<KvSegment>> segments = a_->LoadKvSegments(tenant_, "s");
  ASSERT_TRUE(segments.ok());
  for (const KvSegment& segment : *segments)
    EXPECT_EQ(segment.payload.size(), 256u);  // none of A's 5000-byte segments
}

TEST_F(RadosStoreTest, TheGuardRefusesACommitThatRacedPastTheCheck) {
  // Two commits of the same turn by the same epoch (one server's bug, or a replay): the
  // turn-count guard lets exactly one through.
  SessionRecord session = MakeSession(tenant_, "s");
  ASSERT_TRUE(a_->CreateSession(session).ok());
  std::atomic<int> ok{0}, refused{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      TurnCommit commit = NextExchange(session);
      commit.turns[0].set_text(absl::StrCat("writer ", i));
      absl::Status status = (i % 2 == 0 ? a_ : b_)->CommitTurn(commit);
      if (status.ok()) {
        ++ok;
      } else if (absl::IsFailedPrecondition(status) || absl::IsAborted(status)) {
        ++refused;
      } else {
        ADD_FAILURE() << status;
      }
    });
  }
  for (std::thread& thread : threads)
    thread.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(refused.load(), 3);
  absl::StatusOr<std::vector<TurnRecord>> turns = b_->LoadTranscript(tenant_, "s");
  ASSERT_TRUE(turns.ok());
  EXPECT_EQ(turns->size(), 2u);
}

TEST_F(RadosStoreTest, TakeoversRaceToOneWinnerEachRound) {
  ASSERT_TRUE(a_->CreateSession(MakeSession(tenant_, "s")).ok());
  std::vector<uint64_t> got(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<uint64_t> epoch = (i % 2 == 0 ? a_ : b_)->AcquireSession(tenant_, "s");
      EXPECT_TRUE(epoch.ok()) << epoch.status();
      got[i] = epoch.value_or(0);
    });
  }
  for (std::thread& thread : threads)
    thread.join();
  std::sort(got.begin(), got.end());
  EXPECT_THAT(got, ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));  // each epoch handed out once
}

TEST_F(RadosStoreTest, ForkCopiesAndEvolvesIndependently) {
  SessionRecord session = MakeSession(tenant_, "src");
  ASSERT_TRUE(a_->CreateSession(session).ok());
  TurnCommit commit = NextExchange(session);
  ASSERT_TRUE(a_->CommitTurn(commit).ok());
  absl::StatusOr<SessionRecord> fork = b_->ForkSession(tenant_, "src", "dst");
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ(fork->turn_count(), 2);
  EXPECT_TRUE(absl::IsAlreadyExists(b_->ForkSession(tenant_, "src", "dst").status()));
  ASSERT_TRUE(a_->DeleteSession(tenant_, "src").ok());
  absl::StatusOr<std::vector<KvSegment>> segments = b_->LoadKvSegments(tenant_, "dst");
  ASSERT_TRUE(segments.ok()) << segments.status();
  EXPECT_EQ(segments->size(), 2u);
  TurnCommit next = NextExchange(*fork);
  EXPECT_TRUE(b_->CommitTurn(next).ok());
}

TEST_F(RadosStoreTest, DocumentsAreWrittenOnceAndSharedByEveryServer) {
  DocumentRecord record;
  record.set_tenant(tenant_);
  record.set_document_id("d-abc");
  record.set_model_fingerprint(testing::kTestModel);
  record.set_stream_tokens(12);
  const std::string payload = testing::SegmentPayload(7, 4096);
  ASSERT_TRUE(a_->PutDocument(record, payload).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(b_->PutDocument(record, "other bytes")));
  absl::StatusOr<StoredDocument> got = b_->GetDocument(tenant_, "d-abc");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payload, payload);
  EXPECT_EQ(got->record.stream_tokens(), 12);
  EXPECT_TRUE(absl::IsNotFound(b_->GetDocument(tenant_, "d-none").status()));
}

TEST_F(RadosStoreTest, GarbageCollectionRemovesOnlyUnnamedSegments) {
  SessionRecord session = MakeSession(tenant_, "s");
  ASSERT_TRUE(a_->CreateSession(session).ok());
  TurnCommit commit = NextExchange(session);
  ASSERT_TRUE(a_->CommitTurn(commit).ok());
  // A commit that died between its two steps: a segment object no head names.
  const std::string orphan = absl::StrCat("seg/", tenant_, "/s/00000000000000000009.x.dead");
  ASSERT_TRUE(a_->pool().CreateAll({{orphan, "half a commit"}}).ok());
  // ... and one of a session deleted half way.
  const std::string gone = absl::StrCat("seg/", tenant_, "/deleted/00000000000000000000.x.y");
  ASSERT_TRUE(a_->pool().CreateAll({{gone, "left over"}}).ok());

  // Young objects may belong to a commit in flight: kept.
  absl::StatusOr<GarbageReport> report = b_->CollectGarbage(absl::Hours(1));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(a_->pool().Stat(orphan).ok());
  report = b_->CollectGarbage(absl::ZeroDuration());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GE(report->segments_removed, 2);
  EXPECT_TRUE(absl::IsNotFound(a_->pool().Stat(orphan).status()));
  EXPECT_TRUE(absl::IsNotFound(a_->pool().Stat(gone).status()));
  absl::StatusOr<std::vector<KvSegment>> segments = a_->LoadKvSegments(tenant_, "s");
  ASSERT_TRUE(segments.ok()) << segments.status();
  EXPECT_EQ(segments->size(), 2u);
}

TEST_F(RadosStoreTest, CountSessionsSeesEveryServersCreates) {
  absl::StatusOr<int64_t> before = b_->CountSessions();
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(a_->CreateSession(MakeSession(tenant_, "c1")).ok());
  ASSERT_TRUE(b_->CreateSession(MakeSession(tenant_, "c2")).ok());
  absl::StatusOr<int64_t> after = a_->CountSessions();
  ASSERT_TRUE(after.ok());
  // Other runs on the pool may add sessions meanwhile, never remove ours.
  EXPECT_GE(*after, *before + 2);
}

}  // namespace
}  // namespace gistmem::store
