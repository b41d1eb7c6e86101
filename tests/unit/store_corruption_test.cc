// Damaged values (written behind the store's back through a raw RocksDB handle) come back as
// DATA_LOSS naming column family and key, and harm only the session they belong to.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "store/record_codec.h"
#include "store/records.h"
#include "store/rocks_store.h"
#include "tests/unit/store_test_support.h"

namespace gistmem::store {
namespace {

using ::testing::HasSubstr;
using testing::MakeSession;
using testing::NextExchange;

struct Damage {
  std::string name;
  std::string family;  // "sessions", "transcript" or "kv"
  uint64_t seq;        // which turn or segment (unused for "sessions")
  std::function<void(std::string&)> apply;
  std::string expected_message;
};

void PrintTo(const Damage& damage, std::ostream* out) {
  *out << damage.name;
}

std::vector<Damage> Damages() {
  return {
      {"FlippedPayloadByte", "transcript", 1,
       [](std::string& value) { value[value.size() / 2 + kRecordHeaderSize / 2] ^= 0x04; },
       "checksum mismatch"},
      {"TruncatedKvValue", "kv", 0, [](std::string& value) { value.resize(value.size() - 10); },
       "truncated"},
      {"TruncatedBelowHeader", "transcript", 0, [](std::string& value) { value.resize(7); },
       "truncated"},
      {"BadMagicSession", "sessions", 0, [](std::string& value) { value[0] = 'g'; }, "bad magic"},
      {"FutureVersionKv", "kv", 2, [](std::string& value) { value[4] = 7; },
       "unknown record format version 7"},
      {"TrailingGarbage", "transcript", 3, [](std::string& value) { value += "junk"; },
       "length mismatch"},
      {"UnparsableTurn", "transcript", 2,
       [](std::string& value) {
         value = EncodeRecord(RecordType::kTurn, std::string("\x0a\xff\xff\xff", 4));
       },
       "unparsable TurnRecord"},
      {"SessionFiledUnderAnotherKey", "sessions", 0,
       [](std::string& value) { value = EncodeSessionValue(MakeSession("acme", "good")); },
       "belongs to session"},
  };
}

class StoreCorruptionTest : public ::testing::TestWithParam<Damage> {
 protected:
  void SetUp() override {
    {
      std::unique_ptr<RocksStore> store = Open();
      for (const char* id : {"good", "bad"}) {
        ASSERT_TRUE(store->CreateSession(MakeSession("acme", id)).ok());
        SessionRecord record = *store->GetSession("acme", id);
        for (int i = 0; i < 2; ++i) {
          const TurnCommit commit = NextExchange(record);
          ASSERT_TRUE(store->CommitTurn(commit).ok());
          record = commit.session;
        }
      }
    }
    const Damage& damage = GetParam();
    damaged_key_ = damage.family == "sessions" ? SessionKey("acme", "bad")
                                               : SequencedKey("acme", "bad", damage.seq);
    testing::RawDb raw(dir_.db());
    std::string value = raw.Get(damage.family, damaged_key_);
    damage.apply(value);
    raw.Put(damage.family, damaged_key_, value);
  }

  std::unique_ptr<RocksStore> Open() {
    absl::StatusOr<std::unique_ptr<RocksStore>> store = RocksStore::Open(dir_.db());
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // The error the damaged family's reader gives for the bad session.
  absl::Status LoadDamaged(RocksStore& store) {
    const std::string& family = GetParam().family;
    if (family == "sessions") return store.GetSession("acme", "bad").status();
    if (family == "transcript") return store.LoadTranscript("acme", "bad").status();
    return store.LoadKvSegments("acme", "bad").status();
  }

  void ExpectNamesTheDamage(const absl::Status& status) {
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    const std::string message(status.message());
    EXPECT_THAT(message, HasSubstr("column family '" + GetParam().family + "'"));
    EXPECT_THAT(message, HasSubstr("key '" + PrintableKey(damaged_key_) + "'"));
    EXPECT_THAT(message, HasSubstr(GetParam().expected_message));
  }

  testing::TempDir dir_;
  std::string damaged_key_;
};

TEST_P(StoreCorruptionTest, ReadingTheDamagedRecordIsDataLossNamingIt) {
  std::unique_ptr<RocksStore> store = Open();
  ASSERT_NE(store, nullptr);
  ExpectNamesTheDamage(LoadDamaged(*store));
}

TEST_P(StoreCorruptionTest, OtherSessionsStillLoad) {
  std::unique_ptr<RocksStore> store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->GetSession("acme", "good").ok());
  absl::StatusOr<std::vector<TurnRecord>> transcript = store->LoadTranscript("acme", "good");
  ASSERT_TRUE(transcript.ok()) << transcript.status();
  EXPECT_EQ(transcript->size(), 4u);
  absl::StatusOr<std::vector<KvSegment>> segments = store->LoadKvSegments("acme", "good");
  ASSERT_TRUE(segments.ok()) << segments.status();
  EXPECT_EQ(segments->size(), 3u);
  SessionRecord record = *store->GetSession("acme", "good");
  EXPECT_TRUE(store->CommitTurn(NextExchange(record)).ok());
}

TEST_P(StoreCorruptionTest, ListingShowsTheRestAndReportsTheDamagedSession) {
  std::unique_ptr<RocksStore> store = Open();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<SessionPage> page = store->ListSessions("acme", 10, "");
  ASSERT_TRUE(page.ok()) << page.status();
  if (GetParam().family == "sessions") {
    ASSERT_EQ(page->sessions.size(), 1u);
    EXPECT_EQ(page->sessions[0].session_id(), "good");
    ASSERT_EQ(page->unreadable.size(), 1u);
    EXPECT_EQ(page->unreadable[0].session_id, "bad");
    ExpectNamesTheDamage(page->unreadable[0].status);
  } else {
    EXPECT_EQ(page->sessions.size(), 2u);
  }
}

TEST_P(StoreCorruptionTest, ForkOfTheDamagedSessionFailsAndCreatesNothing) {
  std::unique_ptr<RocksStore> store = Open();
  ASSERT_NE(store, nullptr);
  const absl::Status status = store->ForkSession("acme", "bad", "copy").status();
  ExpectNamesTheDamage(status);
  EXPECT_EQ(store->GetSession("acme", "copy").status().code(), absl::StatusCode::kNotFound);
}

TEST_P(StoreCorruptionTest, TheDamagedSessionCanBeDeleted) {
  std::unique_ptr<RocksStore> store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->DeleteSession("acme", "bad").ok());
  EXPECT_EQ(store->GetSession("acme", "bad").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->GetSession("acme", "good").ok());
}

INSTANTIATE_TEST_SUITE_P(AllDamages, StoreCorruptionTest, ::testing::ValuesIn(Damages()),
                         [](const ::testing::TestParamInfo<Damage>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace gistmem::store
