// RocksStore against a real database in a temporary directory: sessions, paging, deletion,
// turns, forks, stats, reopening and the format marker.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/records.h"
#include "store/rocks_store.h"
#include "tests/unit/store_test_support.h"

namespace gistmem::store {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::MakeSession;
using testing::NextExchange;

class RocksStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<RocksStore>> opened = RocksStore::Open(dir_.db());
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = *std::move(opened);
  }

  SessionRecord Create(const std::string& tenant, const std::string& session_id) {
    SessionRecord record = MakeSession(tenant, session_id);
    const absl::Status status = store_->CreateSession(record);
    EXPECT_TRUE(status.ok()) << status;
    return record;
  }

  // Commits `exchanges` exchanges onto the stored session and returns its final record.
  SessionRecord CommitExchanges(const std::string& tenant, const std::string& session_id,
                                int exchanges) {
    absl::StatusOr<SessionRecord> record = store_->GetSession(tenant, session_id);
    EXPECT_TRUE(record.ok()) << record.status();
    for (int i = 0; i < exchanges; ++i) {
      const TurnCommit commit = NextExchange(*record);
      const absl::Status status = store_->CommitTurn(commit);
      EXPECT_TRUE(status.ok()) << status;
      *record = commit.session;
    }
    return *record;
  }

  testing::TempDir dir_;
  std::unique_ptr<RocksStore> store_;
};

TEST_F(RocksStoreTest, CreateThenGet) {
  const SessionRecord created = Create("acme", "s1");
  absl::StatusOr<SessionRecord> got = store_->GetSession("acme", "s1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), created.SerializeAsString());
}

TEST_F(RocksStoreTest, CreateTwiceIsAlreadyExists) {
  Create("acme", "s1");
  SessionRecord again = MakeSession("acme", "s1");
  again.set_system_prompt("different");
  EXPECT_EQ(store_->CreateSession(again).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->GetSession("acme", "s1")->system_prompt(), "You are terse.");
}

TEST_F(RocksStoreTest, UnknownSessionIsNotFound) {
  Create("acme", "s1");
  EXPECT_EQ(store_->GetSession("acme", "nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteSession("acme", "nope").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->LoadTranscript("acme", "nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->LoadKvSegments("acme", "nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Stats("acme", "nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ForkSession("acme", "nope", "new").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->CommitTurn(NextExchange(MakeSession("acme", "nope"))).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RocksStoreTest, TenantsDoNotShareSessions) {
  Create("acme", "s1");
  EXPECT_EQ(store_->GetSession("globex", "s1").status().code(), absl::StatusCode::kNotFound);
  Create("globex", "s1");
  CommitExchanges("acme", "s1", 2);
  EXPECT_EQ(store_->LoadTranscript("globex", "s1")->size(), 0u);
  EXPECT_EQ(store_->LoadTranscript("acme", "s1")->size(), 4u);
}

TEST_F(RocksStoreTest, InvalidIdsAreInvalidArgument) {
  for (const auto& [tenant, session_id] :
       std::vector<std::pair<std::string, std::string>>{{"acme", ""},
                                                        {"", "s1"},
                                                        {"acme", "a/b"},
                                                        {"ac/me", "s1"},
                                                        {"acme", std::string(129, 'x')}}) {
    EXPECT_EQ(store_->CreateSession(MakeSession(tenant, session_id)).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->GetSession(tenant, session_id).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->DeleteSession(tenant, session_id).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->LoadTranscript(tenant, session_id).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  Create("acme", "s1");
  EXPECT_EQ(store_->ForkSession("acme", "s1", "bad id").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListSessions("a/b", 10, "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RocksStoreTest, ListPagesThroughAllSessionsInIdOrder) {
  std::set<std::string> expected;
  for (int i = 0; i < 25; ++i) {
    // Created out of order; listed by id.
    const std::string id = "session-" + std::to_string((i * 7) % 25 + 100);
    Create("acme", id);
    expected.insert(id);
  }
  Create("globex", "session-999");  // another tenant's: never listed

  std::vector<std::string> listed;
  std::vector<size_t> page_sizes;
  std::string token;
  do {
    absl::StatusOr<SessionPage> page = store_->ListSessions("acme", 10, token);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_TRUE(page->unreadable.empty());
    page_sizes.push_back(page->sessions.size());
    for (const SessionRecord& record : page->sessions)
      listed.push_back(record.session_id());
    token = page->next_page_token;
  } while (!token.empty() && page_sizes.size() < 10);

  EXPECT_THAT(page_sizes, ElementsAre(10, 10, 5));
  EXPECT_EQ(listed, std::vector<std::string>(expected.begin(), expected.end()));
}

TEST_F(RocksStoreTest, ListExactPageHasNoNextToken) {
  for (int i = 0; i < 3; ++i)
    Create("acme", "s" + std::to_string(i));
  absl::StatusOr<SessionPage> page = store_->ListSessions("acme", 3, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->sessions.size(), 3u);
  EXPECT_TRUE(page->next_page_token.empty());
}

TEST_F(RocksStoreTest, ListDefaultsAndRejectsBadTokens) {
  for (int i = 0; i < 105; ++i)
    Create("acme", "s" + std::to_string(i));
  absl::StatusOr<SessionPage> page = store_->ListSessions("acme", 0, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->sessions.size(), static_cast<size_t>(kDefaultPageSize));
  EXPECT_FALSE(page->next_page_token.empty());
  EXPECT_EQ(store_->ListSessions("acme", 10, "not-a-token").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<SessionPage> empty = store_->ListSessions("nobody", 10, "");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->sessions.empty());
}

TEST_F(RocksStoreTest, ListContinuesAfterTheTokenSessionWasDeleted) {
  for (const char* id : {"a", "b", "c", "d"})
    Create("acme", id);
  absl::StatusOr<SessionPage> first = store_->ListSessions("acme", 2, "");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(store_->DeleteSession("acme", "b").ok());
  absl::StatusOr<SessionPage> second = store_->ListSessions("acme", 2, first->next_page_token);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->sessions.size(), 2u);
  EXPECT_EQ(second->sessions[0].session_id(), "c");
  EXPECT_EQ(second->sessions[1].session_id(), "d");
}

TEST_F(RocksStoreTest, CommitTurnRoundTrip) {
  Create("acme", "s1");
  const SessionRecord after = CommitExchanges("acme", "s1", 3);

  absl::StatusOr<SessionRecord> stored = store_->GetSession("acme", "s1");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->SerializeAsString(), after.SerializeAsString());
  EXPECT_EQ(stored->turn_count(), 6);
  EXPECT_EQ(stored->next_kv_segment_seq(), 6u);

  absl::StatusOr<std::vector<TurnRecord>> transcript = store_->LoadTranscript("acme", "s1");
  ASSERT_TRUE(transcript.ok()) << transcript.status();
  ASSERT_EQ(transcript->size(), 6u);
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ((*transcript)[i].SerializeAsString(),
              testing::MakeTurn(i, (i % 2 == 0 ? "question " : "answer ") + std::to_string(i))
                  .SerializeAsString());
  }

  // Gists 0, 2, 4 stay; each window replaced the one before, so only window 5 is left.
  absl::StatusOr<std::vector<KvSegment>> segments = store_->LoadKvSegments("acme", "s1");
  ASSERT_TRUE(segments.ok()) << segments.status();
  std::vector<uint64_t> seqs;
  for (const KvSegment& segment : *segments) {
    seqs.push_back(segment.seq);
    const KvSegment expected = testing::MakeSegment(segment.seq, segment.header.kind());
    EXPECT_EQ(segment.header.SerializeAsString(), expected.header.SerializeAsString());
    EXPECT_EQ(segment.payload, expected.payload);
  }
  EXPECT_THAT(seqs, ElementsAre(0, 2, 4, 5));
  EXPECT_EQ((*segments)[3].header.kind(), "window");
}

TEST_F(RocksStoreTest, ReplayedCommitIsRejected) {
  const SessionRecord created = Create("acme", "s1");
  const TurnCommit commit = NextExchange(created);
  ASSERT_TRUE(store_->CommitTurn(commit).ok());
  EXPECT_EQ(store_->CommitTurn(commit).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->LoadTranscript("acme", "s1")->size(), 2u);
}

TEST_F(RocksStoreTest, CommitsSurviveReopen) {
  Create("acme", "s1");
  const SessionRecord after = CommitExchanges("acme", "s1", 4);
  const std::vector<KvSegment> before = *store_->LoadKvSegments("acme", "s1");
  Reopen();
  EXPECT_EQ(store_->GetSession("acme", "s1")->SerializeAsString(), after.SerializeAsString());
  EXPECT_EQ(store_->LoadTranscript("acme", "s1")->size(), 8u);
  const std::vector<KvSegment> reloaded = *store_->LoadKvSegments("acme", "s1");
  ASSERT_EQ(reloaded.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(reloaded[i].seq, before[i].seq);
    EXPECT_EQ(reloaded[i].payload, before[i].payload);
  }
  // And the session goes on where it stopped.
  EXPECT_EQ(CommitExchanges("acme", "s1", 1).turn_count(), 10);
}

// Megabyte segments go to blob files when the memtable is flushed (reopening flushes what the
// log recovered); they must read back the same from there.
TEST_F(RocksStoreTest, LargeSegmentsSurviveReopen) {
  constexpr size_t kLarge = 1 << 20;
  const SessionRecord created = Create("acme", "big");
  const TurnCommit commit = NextExchange(created, kLarge);
  ASSERT_TRUE(store_->CommitTurn(commit).ok());
  for (int reopen = 0; reopen < 2; ++reopen) {
    Reopen();
    absl::StatusOr<std::vector<KvSegment>> segments = store_->LoadKvSegments("acme", "big");
    ASSERT_TRUE(segments.ok()) << segments.status();
    ASSERT_EQ(segments->size(), 2u);
    for (const KvSegment& segment : *segments) {
      EXPECT_EQ(segment.payload, testing::SegmentPayload(segment.seq, kLarge));
    }
  }
  bool has_blob_file = false;
  for (const auto& entry : std::filesystem::directory_iterator(dir_.db())) {
    has_blob_file = has_blob_file || entry.path().extension() == ".blob";
  }
  EXPECT_TRUE(has_blob_file);
  EXPECT_GT(store_->Stats("acme", "big")->kv_bytes, static_cast<int64_t>(2 * kLarge));
  ASSERT_TRUE(store_->ForkSession("acme", "big", "big-copy").ok());
  ASSERT_TRUE(store_->DeleteSession("acme", "big").ok());
  Reopen();
  EXPECT_EQ(store_->LoadKvSegments("acme", "big-copy")->size(), 2u);
}

TEST_F(RocksStoreTest, DeleteRemovesEverythingOfThatSessionOnly) {
  // Ids that share a prefix with "s1" or sort right next to it.
  const std::vector<std::string> ids = {"s1", "s", "s0", "s1-", "s1.", "s10", "s1_", "s2"};
  for (const std::string& id : ids) {
    Create("acme", id);
    CommitExchanges("acme", id, 2);
  }
  Create("globex", "s1");
  CommitExchanges("globex", "s1", 1);

  ASSERT_TRUE(store_->DeleteSession("acme", "s1").ok());
  EXPECT_EQ(store_->GetSession("acme", "s1").status().code(), absl::StatusCode::kNotFound);
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_EQ(store_->LoadTranscript("acme", ids[i])->size(), 4u) << ids[i];
    EXPECT_EQ(store_->LoadKvSegments("acme", ids[i])->size(), 3u) << ids[i];
  }
  EXPECT_EQ(store_->LoadTranscript("globex", "s1")->size(), 2u);

  // Nothing under the deleted session's keys is left in any family.
  store_.reset();
  {
    testing::RawDb raw(dir_.db());
    for (const char* family : {"sessions", "transcript", "kv"}) {
      for (const std::string& key : raw.Keys(family)) {
        EXPECT_NE(key, SessionKey("acme", "s1")) << family;
        EXPECT_FALSE(key.starts_with(SessionDataPrefix("acme", "s1")))
            << family << " " << PrintableKey(key);
      }
    }
  }
  Reopen();

  // The id can be used again, starting empty.
  Create("acme", "s1");
  EXPECT_TRUE(store_->LoadTranscript("acme", "s1")->empty());
  EXPECT_TRUE(store_->LoadKvSegments("acme", "s1")->empty());
}

TEST_F(RocksStoreTest, ForkCopiesAndThenEvolvesIndependently) {
  Create("acme", "parent");
  CommitExchanges("acme", "parent", 2);

  absl::StatusOr<SessionRecord> fork = store_->ForkSession("acme", "parent", "child");
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ(fork->session_id(), "child");
  EXPECT_EQ(fork->turn_count(), 4);
  EXPECT_EQ(fork->system_prompt(), "You are terse.");
  EXPECT_GT(fork->create_time_micros(), MakeSession("a", "b").create_time_micros());
  EXPECT_EQ(store_->GetSession("acme", "child")->SerializeAsString(), fork->SerializeAsString());

  const std::vector<TurnRecord> parent_turns = *store_->LoadTranscript("acme", "parent");
  const std::vector<TurnRecord> child_turns = *store_->LoadTranscript("acme", "child");
  ASSERT_EQ(child_turns.size(), parent_turns.size());
  for (size_t i = 0; i < parent_turns.size(); ++i) {
    EXPECT_EQ(child_turns[i].SerializeAsString(), parent_turns[i].SerializeAsString());
  }
  EXPECT_EQ(store_->LoadKvSegments("acme", "child")->size(),
            store_->LoadKvSegments("acme", "parent")->size());

  CommitExchanges("acme", "child", 3);
  CommitExchanges("acme", "parent", 1);
  EXPECT_EQ(store_->LoadTranscript("acme", "child")->size(), 10u);
  EXPECT_EQ(store_->LoadTranscript("acme", "parent")->size(), 6u);

  ASSERT_TRUE(store_->DeleteSession("acme", "parent").ok());
  EXPECT_EQ(store_->LoadTranscript("acme", "child")->size(), 10u);
  EXPECT_EQ(store_->LoadKvSegments("acme", "child")->size(), 6u);
}

TEST_F(RocksStoreTest, ForkOntoAnExistingIdIsAlreadyExists) {
  Create("acme", "a");
  Create("acme", "b");
  EXPECT_EQ(store_->ForkSession("acme", "a", "b").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->ForkSession("acme", "a", "a").status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(RocksStoreTest, StatsCountKvAndTranscriptBytes) {
  Create("acme", "s1");
  absl::StatusOr<SessionStorageStats> empty = store_->Stats("acme", "s1");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->kv_bytes, 0);

  SessionRecord record = *store_->GetSession("acme", "s1");
  TurnCommit commit = NextExchange(record, /*payload_size=*/10000);
  ASSERT_TRUE(store_->CommitTurn(commit).ok());
  absl::StatusOr<SessionStorageStats> stats = store_->Stats("acme", "s1");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->kv_segments, 2);
  EXPECT_GT(stats->kv_bytes, 20000);
  EXPECT_LT(stats->kv_bytes, 21000);
  EXPECT_EQ(stats->transcript_turns, 2);
  EXPECT_GT(stats->transcript_bytes, 0);
}

TEST_F(RocksStoreTest, ConcurrentCreatesOfOneIdLetExactlyOneWin) {
  constexpr int kThreads = 8;
  for (int round = 0; round < 20; ++round) {
    const std::string id = "race-" + std::to_string(round);
    std::atomic<int> created{0};
    std::atomic<int> already_exists{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        SessionRecord record = MakeSession("acme", id);
        record.set_system_prompt("thread " + std::to_string(t));
        const absl::Status status = store_->CreateSession(record);
        if (status.ok()) ++created;
        if (status.code() == absl::StatusCode::kAlreadyExists) ++already_exists;
      });
    }
    for (std::thread& thread : threads)
      thread.join();
    EXPECT_EQ(created.load(), 1);
    EXPECT_EQ(already_exists.load(), kThreads - 1);
  }
}

TEST_F(RocksStoreTest, ConcurrentSessionsCommitIndependently) {
  constexpr int kThreads = 6;
  for (int t = 0; t < kThreads; ++t)
    Create("acme", "worker-" + std::to_string(t));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string id = "worker-" + std::to_string(t);
      SessionRecord record = *store_->GetSession("acme", id);
      for (int i = 0; i < 10; ++i) {
        const TurnCommit commit = NextExchange(record);
        EXPECT_TRUE(store_->CommitTurn(commit).ok());
        record = commit.session;
        EXPECT_TRUE(store_->LoadKvSegments("acme", id).ok());
      }
    });
  }
  for (std::thread& thread : threads)
    thread.join();
  for (int t = 0; t < kThreads; ++t) {
    const std::string id = "worker-" + std::to_string(t);
    EXPECT_EQ(store_->LoadTranscript("acme", id)->size(), 20u);
    EXPECT_EQ(store_->GetSession("acme", id)->turn_count(), 20);
  }
}

TEST(RocksStoreOpenTest, MissingDatabaseWithoutCreateIsNotFound) {
  testing::TempDir dir;
  RocksStoreOptions options;
  options.create_if_missing = false;
  EXPECT_EQ(RocksStore::Open(dir.db(), options).status().code(), absl::StatusCode::kNotFound);
}

TEST(RocksStoreOpenTest, CreatesAllColumnFamiliesAndTheFormatMarker) {
  testing::TempDir dir;
  ASSERT_TRUE(RocksStore::Open(dir.db()).ok());
  std::vector<std::string> families;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.db(), &families).ok());
  EXPECT_THAT(families, ::testing::UnorderedElementsAre("default", "sessions", "transcript", "kv",
                                                        "documents"));
  testing::RawDb raw(dir.db());
  EXPECT_TRUE(DecodeStoreFormatValue(raw.Get("default", "format")).ok());
}

TEST(RocksStoreOpenTest, NewerStoreFormatIsFailedPrecondition) {
  testing::TempDir dir;
  ASSERT_TRUE(RocksStore::Open(dir.db()).ok());
  { testing::RawDb(dir.db()).Put("default", "format", EncodeStoreFormatValue(2)); }
  const absl::Status status = RocksStore::Open(dir.db()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("store format 2"));
}

TEST(RocksStoreOpenTest, NewerRecordEnvelopeIsFailedPrecondition) {
  testing::TempDir dir;
  ASSERT_TRUE(RocksStore::Open(dir.db()).ok());
  {
    testing::RawDb raw(dir.db());
    std::string marker = raw.Get("default", "format");
    marker[4] = 9;  // envelope version
    raw.Put("default", "format", marker);
  }
  EXPECT_EQ(RocksStore::Open(dir.db()).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RocksStoreOpenTest, DamagedMarkerIsDataLoss) {
  testing::TempDir dir;
  ASSERT_TRUE(RocksStore::Open(dir.db()).ok());
  {
    testing::RawDb raw(dir.db());
    std::string marker = raw.Get("default", "format");
    marker.back() ^= 1;
    raw.Put("default", "format", marker);
  }
  const absl::Status status = RocksStore::Open(dir.db()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("key 'format'"));
}

TEST(RocksStoreOpenTest, SessionsWithoutMarkerAreRefused) {
  testing::TempDir dir;
  ASSERT_TRUE(RocksStore::Open(dir.db()).ok());
  {
    testing::RawDb raw(dir.db());
    raw.Put("sessions", "acme/s1", EncodeSessionValue(MakeSession("acme", "s1")));
    raw.Delete("default", "format");
  }
  EXPECT_EQ(RocksStore::Open(dir.db()).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RocksStoreOpenTest, OpensADatabaseWithAColumnFamilyItDoesNotKnow) {
  testing::TempDir dir;
  ASSERT_TRUE(RocksStore::Open(dir.db()).ok());
  {
    rocksdb::Options options;
    rocksdb::DB* db = nullptr;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const char* name : {"default", "sessions", "transcript", "kv", "documents"}) {
      families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    ASSERT_TRUE(rocksdb::DB::Open(options, dir.db(), families, &handles, &db).ok());
    rocksdb::ColumnFamilyHandle* extra = nullptr;
    ASSERT_TRUE(db->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), "extra", &extra).ok());
    handles.push_back(extra);
    for (rocksdb::ColumnFamilyHandle* handle : handles) {
      ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
    }
    delete db;
  }
  absl::StatusOr<std::unique_ptr<RocksStore>> store = RocksStore::Open(dir.db());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->CreateSession(MakeSession("acme", "s1")).ok());
}

}  // namespace
}  // namespace gistmem::store
