#include "store/kv_segment_codec.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "store/record_codec.h"

namespace gistmem::store {
namespace {
constexpr size_t kHeaderLengthSize = 4;
}  // namespace

std::string EncodeKvSegmentValue(const gistmem::store::v1::KvSegmentHeader& header,
                                 std::string_view payload) {
  const std::string header_bytes = header.SerializeAsString();
  const auto header_length = static_cast<uint32_t>(header_bytes.size());
  char length_bytes[kHeaderLengthSize];
  for (size_t i = 0; i < kHeaderLengthSize; ++i) {
    length_bytes[i] = static_cast<char>(header_length >> (8 * i));
  }
  return EncodeRecord(RecordType::kKvSegment,
                      {std::string_view(length_bytes, kHeaderLengthSize), header_bytes, payload});
}

absl::StatusOr<DecodedKvSegment> DecodeKvSegmentValue(std::string_view value) {
  absl::StatusOr<std::string_view> body = DecodeRecord(value, RecordType::kKvSegment);
  if (!body.ok()) return body.status();
  if (body->size() < kHeaderLengthSize) {
    return absl::DataLossError(absl::StrFormat(
        "truncated kv segment: %d bytes, too short for the header length", body->size()));
  }
  uint64_t header_length = 0;
  for (size_t i = 0; i < kHeaderLengthSize; ++i) {
    header_length |= uint64_t{static_cast<unsigned char>((*body)[i])} << (8 * i);
  }
  const std::string_view rest = body->substr(kHeaderLengthSize);
  if (header_length > rest.size()) {
    return absl::DataLossError(
        absl::StrFormat("truncated kv segment: header length %d exceeds the %d bytes left",
                        header_length, rest.size()));
  }
  DecodedKvSegment decoded;
  if (!decoded.header.ParseFromArray(rest.data(), static_cast<int>(header_length))) {
    return absl::DataLossError("unparsable KvSegmentHeader");
  }
  decoded.payload = rest.substr(header_length);
  return decoded;
}

}  // namespace gistmem::store
