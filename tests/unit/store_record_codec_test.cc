// The record envelope and the values built on it: round trips, and every kind of damage
// reported as DATA_LOSS that says what failed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "store/kv_segment_codec.h"
#include "store/record_codec.h"
#include "store/records.h"
#include "tests/unit/store_test_support.h"

namespace gistmem::store {
namespace {

using ::testing::HasSubstr;

std::string MessageOf(const absl::Status& status) {
  return std::string(status.message());
}

void ExpectDataLoss(const absl::Status& status, const std::string& what) {
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(MessageOf(status), HasSubstr(what));
}

TEST(RecordCodecTest, RoundTripsPayloads) {
  for (const std::string& payload : {std::string(), std::string("hello"),
                                     std::string("\0\xff/GMR1\0", 8), std::string(100000, 'x')}) {
    const std::string record = EncodeRecord(RecordType::kTurn, payload);
    EXPECT_EQ(record.size(), kRecordHeaderSize + payload.size());
    EXPECT_EQ(record.substr(0, 4), "GMR1");
    absl::StatusOr<std::string_view> decoded = DecodeRecord(record, RecordType::kTurn);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, payload);
  }
}

TEST(RecordCodecTest, PartsAreConcatenated) {
  const std::string record = EncodeRecord(RecordType::kSession, {"ab", "", "cde"});
  absl::StatusOr<std::string_view> decoded = DecodeRecord(record, RecordType::kSession);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, "abcde");
}

TEST(RecordCodecTest, HeaderLayoutIsLittleEndian) {
  const std::string record = EncodeRecord(RecordType::kKvSegment, "xyz");
  EXPECT_EQ(record.substr(4, 2), std::string("\x01\x00", 2));            // version 1
  EXPECT_EQ(record.substr(6, 2), std::string("\x04\x00", 2));            // kKvSegment
  EXPECT_EQ(record.substr(8, 8), std::string("\x03\0\0\0\0\0\0\0", 8));  // length 3
}

TEST(RecordCodecTest, ShorterThanHeaderIsTruncated) {
  const std::string record = EncodeRecord(RecordType::kTurn, "payload");
  ExpectDataLoss(DecodeRecord(record.substr(0, 10), RecordType::kTurn).status(), "truncated");
  ExpectDataLoss(DecodeRecord("", RecordType::kTurn).status(), "truncated");
}

TEST(RecordCodecTest, BadMagic) {
  std::string record = EncodeRecord(RecordType::kTurn, "payload");
  record[0] = 'X';
  ExpectDataLoss(DecodeRecord(record, RecordType::kTurn).status(), "bad magic");
}

TEST(RecordCodecTest, UnknownVersion) {
  std::string record = EncodeRecord(RecordType::kTurn, "payload");
  record[4] = 2;
  ExpectDataLoss(DecodeRecord(record, RecordType::kTurn).status(),
                 "unknown record format version 2");
  EXPECT_EQ(PeekRecordFormatVersion(record), 2);
}

TEST(RecordCodecTest, WrongRecordType) {
  const std::string record = EncodeRecord(RecordType::kTurn, "payload");
  ExpectDataLoss(DecodeRecord(record, RecordType::kSession).status(), "record type 3");
}

TEST(RecordCodecTest, TruncatedPayload) {
  const std::string record = EncodeRecord(RecordType::kTurn, "payload");
  ExpectDataLoss(DecodeRecord(record.substr(0, record.size() - 1), RecordType::kTurn).status(),
                 "truncated: header declares 7 payload bytes, only 6 present");
}

TEST(RecordCodecTest, TrailingBytesAreALengthMismatch) {
  const std::string record = EncodeRecord(RecordType::kTurn, "payload") + "!";
  ExpectDataLoss(DecodeRecord(record, RecordType::kTurn).status(), "length mismatch");
}

TEST(RecordCodecTest, FlippedPayloadByteIsAChecksumMismatch) {
  std::string record = EncodeRecord(RecordType::kTurn, "payload");
  record[kRecordHeaderSize + 3] ^= 0x01;
  ExpectDataLoss(DecodeRecord(record, RecordType::kTurn).status(), "checksum mismatch");
}

TEST(RecordCodecTest, FlippedChecksumIsAChecksumMismatch) {
  std::string record = EncodeRecord(RecordType::kTurn, "payload");
  record[kRecordHeaderSize - 1] ^= 0x80;
  ExpectDataLoss(DecodeRecord(record, RecordType::kTurn).status(), "checksum mismatch");
}

// No single-bit error anywhere in a record goes unnoticed.
TEST(RecordCodecTest, EverySingleBitFlipIsDetected) {
  const std::string record = EncodeRecord(RecordType::kSession, "a small session payload");
  for (size_t byte = 0; byte < record.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string damaged = record;
      damaged[byte] ^= static_cast<char>(1 << bit);
      EXPECT_EQ(DecodeRecord(damaged, RecordType::kSession).status().code(),
                absl::StatusCode::kDataLoss)
          << "byte " << byte << " bit " << bit;
    }
  }
}

TEST(RecordCodecTest, PeekVersionNeedsTheMagic) {
  EXPECT_EQ(PeekRecordFormatVersion(EncodeRecord(RecordType::kTurn, "x")), kRecordFormatVersion);
  EXPECT_EQ(PeekRecordFormatVersion("GMR"), std::nullopt);
  EXPECT_EQ(PeekRecordFormatVersion("XXXX\x01\x00"), std::nullopt);
}

TEST(RecordsTest, SessionAndTurnRoundTrip) {
  const SessionRecord session = testing::MakeSession("acme", "s1");
  absl::StatusOr<SessionRecord> decoded_session = DecodeSessionValue(EncodeSessionValue(session));
  ASSERT_TRUE(decoded_session.ok()) << decoded_session.status();
  EXPECT_EQ(decoded_session->SerializeAsString(), session.SerializeAsString());

  const TurnRecord turn = testing::MakeTurn(3, "hi there");
  absl::StatusOr<TurnRecord> decoded_turn = DecodeTurnValue(EncodeTurnValue(turn));
  ASSERT_TRUE(decoded_turn.ok()) << decoded_turn.status();
  EXPECT_EQ(decoded_turn->text(), "hi there");
  EXPECT_EQ(decoded_turn->token_ids_size(), 8);
}

TEST(RecordsTest, ValidEnvelopeAroundGarbageIsUnparsable) {
  const std::string value = EncodeRecord(RecordType::kSession, std::string("\xff\xff\xff", 3));
  ExpectDataLoss(DecodeSessionValue(value).status(), "unparsable SessionRecord");
}

TEST(RecordsTest, AtKeyNamesFamilyAndKey) {
  const absl::Status status =
      AtKey(absl::DataLossError("checksum mismatch"), "transcript", SequencedKey("acme", "s1", 7));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(MessageOf(status), "column family 'transcript', key 'acme/s1/#7': checksum mismatch");
}

TEST(KvSegmentCodecTest, RoundTrip) {
  const KvSegment segment = testing::MakeSegment(5, "window", 1000);
  const std::string value = EncodeKvSegmentValue(segment.header, segment.payload);
  absl::StatusOr<DecodedKvSegment> decoded = DecodeKvSegmentValue(value);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->header.SerializeAsString(), segment.header.SerializeAsString());
  EXPECT_EQ(decoded->payload, segment.payload);
}

TEST(KvSegmentCodecTest, EmptyPayload) {
  const KvSegment segment = testing::MakeSegment(0, "sink", 0);
  absl::StatusOr<DecodedKvSegment> decoded =
      DecodeKvSegmentValue(EncodeKvSegmentValue(segment.header, ""));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->payload.empty());
  EXPECT_EQ(decoded->header.kind(), "sink");
}

TEST(KvSegmentCodecTest, HeaderLengthBeyondTheValue) {
  const std::string value = EncodeRecord(RecordType::kKvSegment, std::string("\xff\0\0\0ab", 6));
  ExpectDataLoss(DecodeKvSegmentValue(value).status(), "header length 255 exceeds");
}

TEST(KvSegmentCodecTest, TooShortForHeaderLength) {
  ExpectDataLoss(DecodeKvSegmentValue(EncodeRecord(RecordType::kKvSegment, "ab")).status(),
                 "too short");
}

TEST(KvSegmentCodecTest, UnparsableHeader) {
  const std::string value =
      EncodeRecord(RecordType::kKvSegment, std::string("\x03\0\0\0\xff\xff\xff", 7));
  ExpectDataLoss(DecodeKvSegmentValue(value).status(), "unparsable KvSegmentHeader");
}

TEST(KvSegmentCodecTest, EnvelopeDamageIsReported) {
  const KvSegment segment = testing::MakeSegment(1, "gist");
  std::string value = EncodeKvSegmentValue(segment.header, segment.payload);
  value[value.size() - 1] ^= 0x10;
  ExpectDataLoss(DecodeKvSegmentValue(value).status(), "checksum mismatch");
}

}  // namespace
}  // namespace gistmem::store
