// The payload of a `kv` record: a KvSegmentHeader followed by the raw K/V bytes it describes;
// a `documents` record has the same shape with a DocumentRecord (whose `segment` describes
// the bytes) in place of the header.
//
//   header length u32 LE | header (serialized proto) | raw payload bytes
//
// The bytes are kept outside the proto so that a segment of many megabytes is copied once on
// the way in and once on the way out.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "gistmem/store/v1/records.pb.h"

namespace gistmem::store {

struct DecodedKvSegment {
  gistmem::store::v1::KvSegmentHeader header;
  std::string_view payload;  // a view into the decoded value
};

// The complete `kv` value (record envelope included).
std::string EncodeKvSegmentValue(const gistmem::store::v1::KvSegmentHeader& header,
                                 std::string_view payload);

// Checks the envelope, then splits and parses; errors are DATA_LOSS.
absl::StatusOr<DecodedKvSegment> DecodeKvSegmentValue(std::string_view value);

struct DecodedDocument {
  gistmem::store::v1::DocumentRecord record;
  std::string_view payload;
};
std::string EncodeDocumentValue(const gistmem::store::v1::DocumentRecord& record,
                                std::string_view payload);
absl::StatusOr<DecodedDocument> DecodeDocumentValue(std::string_view value);

}  // namespace gistmem::store
