// The envelope around every value the store writes, so that a damaged or foreign value is
// recognised before it is parsed:
//
//   magic "GMR1" (4 bytes) | format version u16 LE | record type u16 LE |
//   payload length u64 LE | crc32 (zlib) of the payload u32 LE | payload
//
// Decoding errors are DATA_LOSS and say what failed; the caller adds which key it was.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace gistmem::store {

enum class RecordType : uint16_t {
  kStoreFormat = 1,
  kSession = 2,
  kTurn = 3,
  kKvSegment = 4,
  kDocument = 5,
};

inline constexpr std::string_view kRecordMagic = "GMR1";
inline constexpr uint16_t kRecordFormatVersion = 1;
inline constexpr size_t kRecordHeaderSize = 4 + 2 + 2 + 8 + 4;

std::string_view RecordTypeName(RecordType type);

// The envelope of the concatenation of `payload_parts` (one copy of each part).
std::string EncodeRecord(RecordType type, std::initializer_list<std::string_view> payload_parts);
inline std::string EncodeRecord(RecordType type, std::string_view payload) {
  return EncodeRecord(type, {payload});
}

// The payload of `record` (a view into it) after checking magic, version, type, length and
// checksum.
absl::StatusOr<std::string_view> DecodeRecord(std::string_view record, RecordType expected_type);

// The format version written in `record`'s envelope, if it starts with the magic; lets a reader
// tell "written by a newer build" from "damaged".
std::optional<uint16_t> PeekRecordFormatVersion(std::string_view record);

}  // namespace gistmem::store
