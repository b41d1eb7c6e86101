// The store's small pure parts: ids, key layout, page tokens, RocksDB status mapping and the
// checks a turn commit must pass.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "store/ids.h"
#include "store/keys.h"
#include "store/page_token.h"
#include "store/rocks_status.h"
#include "store/turn_commit_check.h"
#include "tests/unit/store_test_support.h"

namespace gistmem::store {
namespace {

using ::testing::HasSubstr;

TEST(IdsTest, AcceptsTheAllowedAlphabet) {
  EXPECT_TRUE(IsValidId("a"));
  EXPECT_TRUE(IsValidId("Session_01.draft-2"));
  EXPECT_TRUE(IsValidId(std::string(kMaxIdBytes, 'z')));
  EXPECT_TRUE(IsValidId(".a"));
  EXPECT_TRUE(IsValidId("a.."));
}

TEST(IdsTest, RejectsDotOnlyIds) {
  for (const char* bad : {".", "..", "..."}) {
    EXPECT_FALSE(IsValidId(bad)) << bad;
    EXPECT_THAT(std::string(ValidateId("session id", bad).message()), HasSubstr("only dots"));
  }
}

TEST(IdsTest, RejectsEverythingElse) {
  for (const std::string& bad :
       {std::string(), std::string(kMaxIdBytes + 1, 'z'), std::string("a/b"), std::string("a b"),
        std::string("caf\xc3\xa9"), std::string("a\0b", 3), std::string("x:y")}) {
    EXPECT_FALSE(IsValidId(bad)) << bad;
    const absl::Status status = ValidateId("session id", bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr("invalid session id"));
  }
}

TEST(KeysTest, Layout) {
  EXPECT_EQ(TenantPrefix("acme"), "acme/");
  EXPECT_EQ(SessionKey("acme", "s1"), "acme/s1");
  EXPECT_EQ(SessionDataPrefix("acme", "s1"), "acme/s1/");
  EXPECT_EQ(SequencedKey("acme", "s1", 0x0102), std::string("acme/s1/\0\0\0\0\0\0\x01\x02", 16));
}

TEST(KeysTest, SequencesSortNumerically) {
  EXPECT_LT(SequencedKey("t", "s", 255), SequencedKey("t", "s", 256));
  EXPECT_LT(SequencedKey("t", "s", 9), SequencedKey("t", "s", 10));
  EXPECT_LT(SequencedKey("t", "s", 1ull << 40), SequencedKey("t", "s", ~0ull));
}

// [prefix, PrefixEnd(prefix)) holds exactly the session's own keys, not those of sessions whose
// ids extend or neighbour it.
TEST(KeysTest, PrefixRangeExcludesNeighbours) {
  const std::string prefix = SessionDataPrefix("t", "s1");
  const std::string end = PrefixEnd(prefix);
  EXPECT_GE(SequencedKey("t", "s1", 0), prefix);
  EXPECT_LT(SequencedKey("t", "s1", ~0ull), end);
  for (const char* neighbour : {"s", "s0", "s1-", "s1.", "s10", "s1_", "s1a", "s2", "S1"}) {
    const std::string key = SequencedKey("t", neighbour, 3);
    EXPECT_TRUE(key < prefix || key >= end) << neighbour;
  }
}

TEST(KeysTest, SequenceOf) {
  const std::string prefix = SessionDataPrefix("t", "s");
  EXPECT_EQ(SequenceOf(SequencedKey("t", "s", 77), prefix), 77u);
  EXPECT_EQ(SequenceOf(SequencedKey("t", "s", 77), SessionDataPrefix("t", "x")), std::nullopt);
  EXPECT_EQ(SequenceOf("t/s/short", prefix), std::nullopt);
}

TEST(KeysTest, PrintableKey) {
  EXPECT_EQ(PrintableKey(SequencedKey("acme", "s1", 12)), "acme/s1/#12");
  // A '/' byte inside the sequence does not confuse it.
  EXPECT_EQ(PrintableKey(SequencedKey("acme", "s1", '/')), "acme/s1/#47");
  EXPECT_EQ(PrintableKey(SessionKey("acme", "s1")), "acme/s1");
  EXPECT_EQ(PrintableKey(std::string("a\x01", 2)), "a\\x01");
}

TEST(PageTokenTest, RoundTrip) {
  const std::string token = EncodePageToken("session-42");
  EXPECT_NE(token, "session-42");
  absl::StatusOr<std::string> decoded = DecodePageToken(token);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, "session-42");
}

TEST(PageTokenTest, RejectsForgeries) {
  for (const std::string& bad : {std::string("zz"), std::string("abc"), std::string("2f"),
                                 std::string(""), EncodePageToken("a/b")}) {
    EXPECT_EQ(DecodePageToken(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(RocksStatusTest, Codes) {
  EXPECT_TRUE(FromRocksStatus(rocksdb::Status::OK(), "x").ok());
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::Corruption("bad block"), "x").code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::NoSpace("disk full"), "x").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::IOError("eio"), "x").code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::Busy(), "x").code(), absl::StatusCode::kUnavailable);
  const absl::Status status = FromRocksStatus(rocksdb::Status::IOError("eio"), "writing turn 3");
  EXPECT_THAT(std::string(status.message()), HasSubstr("writing turn 3: rocksdb: IO error"));
}

class TurnCommitCheckTest : public ::testing::Test {
 protected:
  TurnCommitCheckTest() {
    stored_ = testing::MakeSession("t", "s");
    stored_.set_turn_count(4);
    stored_.set_next_kv_segment_seq(6);
  }
  absl::StatusCode CodeOf(const TurnCommit& commit) {
    return CheckTurnCommit(stored_, commit).code();
  }
  SessionRecord stored_;
};

TEST_F(TurnCommitCheckTest, AcceptsTheNextExchange) {
  EXPECT_TRUE(CheckTurnCommit(stored_, testing::NextExchange(stored_)).ok());
}

TEST_F(TurnCommitCheckTest, AcceptsAMetadataOnlyCommit) {
  TurnCommit commit;
  commit.session = stored_;
  commit.session.set_stream_tokens(99);
  EXPECT_TRUE(CheckTurnCommit(stored_, commit).ok());
}

TEST_F(TurnCommitCheckTest, RejectsAReplayedTurn) {
  TurnCommit commit = testing::NextExchange(stored_);
  commit.turns[0].set_turn_index(3);
  EXPECT_EQ(CodeOf(commit), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TurnCommitCheckTest, RejectsAGap) {
  TurnCommit commit = testing::NextExchange(stored_);
  commit.turns[1].set_turn_index(6);
  EXPECT_EQ(CodeOf(commit), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TurnCommitCheckTest, RejectsAWrongTurnCount) {
  TurnCommit commit = testing::NextExchange(stored_);
  commit.session.set_turn_count(7);
  EXPECT_EQ(CodeOf(commit), absl::StatusCode::kInvalidArgument);
}

TEST_F(TurnCommitCheckTest, RejectsOverwritingASegment) {
  TurnCommit commit = testing::NextExchange(stored_);
  commit.new_kv_segments[0].seq = 5;
  EXPECT_EQ(CodeOf(commit), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TurnCommitCheckTest, RejectsASegmentPastNextSeq) {
  TurnCommit commit = testing::NextExchange(stored_);
  commit.new_kv_segments[1].seq = 8;
  EXPECT_EQ(CodeOf(commit), absl::StatusCode::kInvalidArgument);
}

TEST_F(TurnCommitCheckTest, RejectsADuplicateSegment) {
  TurnCommit commit = testing::NextExchange(stored_);
  commit.new_kv_segments[1].seq = commit.new_kv_segments[0].seq;
  EXPECT_EQ(CodeOf(commit), absl::StatusCode::kInvalidArgument);
}

TEST_F(TurnCommitCheckTest, RejectsLoweringNextSeq) {
  TurnCommit commit;
  commit.session = stored_;
  commit.session.set_next_kv_segment_seq(2);
  EXPECT_EQ(CodeOf(commit), absl::StatusCode::kInvalidArgument);
}

TEST_F(TurnCommitCheckTest, RejectsAnotherModelsSegment) {
  TurnCommit commit = testing::NextExchange(stored_);
  commit.new_kv_segments[0].header.set_model_fingerprint("other-model");
  EXPECT_EQ(CodeOf(commit), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TurnCommitCheckTest, RejectsDeletingANewSegment) {
  TurnCommit commit = testing::NextExchange(stored_);
  commit.deleted_kv_segments = {6};
  EXPECT_EQ(CodeOf(commit), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gistmem::store
