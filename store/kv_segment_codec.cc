#include "store/kv_segment_codec.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "store/record_codec.h"

namespace gistmem::store {
namespace {
constexpr size_t kHeaderLengthSize = 4;
}  // namespace

namespace {

std::string EncodeWithBytes(RecordType type, const google::protobuf::Message& header,
                            std::string_view payload) {
  const std::string header_bytes = header.SerializeAsString();
  const auto header_length = static_cast<uint32_t>(header_bytes.size());
  char length_bytes[kHeaderLengthSize];
  for (size_t i = 0; i < kHeaderLengthSize; ++i) {
    length_bytes[i] = static_cast<char>(header_length >> (8 * i));
  }
  return EncodeRecord(type,
                      {std::string_view(length_bytes, kHeaderLengthSize), header_bytes, payload});
}

// Parses the header into `header` and returns the bytes after it.
absl::StatusOr<std::string_view> DecodeWithBytes(std::string_view value, RecordType type,
                                                 google::protobuf::Message& header) {
  absl::StatusOr<std::string_view> body = DecodeRecord(value, type);
  if (!body.ok()) return body.status();
  const std::string what(RecordTypeName(type));
  if (body->size() < kHeaderLengthSize) {
    return absl::DataLossError(absl::StrFormat(
        "truncated %s: %d bytes, too short for the header length", what, body->size()));
  }
  uint64_t header_length = 0;
  for (size_t i = 0; i < kHeaderLengthSize; ++i) {
    header_length |= uint64_t{static_cast<unsigned char>((*body)[i])} << (8 * i);
  }
  const std::string_view rest = body->substr(kHeaderLengthSize);
  if (header_length > rest.size()) {
    return absl::DataLossError(
        absl::StrFormat("truncated %s: header length %d exceeds the %d bytes left", what,
                        header_length, rest.size()));
  }
  if (!header.ParseFromArray(rest.data(), static_cast<int>(header_length))) {
    return absl::DataLossError("unparsable " + header.GetDescriptor()->name());
  }
  return rest.substr(header_length);
}

}  // namespace

std::string EncodeKvSegmentValue(const gistmem::store::v1::KvSegmentHeader& header,
                                 std::string_view payload) {
  return EncodeWithBytes(RecordType::kKvSegment, header, payload);
}

absl::StatusOr<DecodedKvSegment> DecodeKvSegmentValue(std::string_view value) {
  DecodedKvSegment decoded;
  absl::StatusOr<std::string_view> payload =
      DecodeWithBytes(value, RecordType::kKvSegment, decoded.header);
  if (!payload.ok()) return payload.status();
  decoded.payload = *payload;
  return decoded;
}

std::string EncodeDocumentValue(const gistmem::store::v1::DocumentRecord& record,
                                std::string_view payload) {
  return EncodeWithBytes(RecordType::kDocument, record, payload);
}

absl::StatusOr<DecodedDocument> DecodeDocumentValue(std::string_view value) {
  DecodedDocument decoded;
  absl::StatusOr<std::string_view> payload =
      DecodeWithBytes(value, RecordType::kDocument, decoded.record);
  if (!payload.ok()) return payload.status();
  decoded.payload = *payload;
  return decoded;
}

}  // namespace gistmem::store
