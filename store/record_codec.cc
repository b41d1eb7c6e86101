#include "store/record_codec.h"

#include <zlib.h>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "store/absl_view.h"

namespace gistmem::store {
namespace {

constexpr size_t kVersionOffset = 4;
constexpr size_t kTypeOffset = 6;
constexpr size_t kLengthOffset = 8;
constexpr size_t kCrcOffset = 16;

void PutLittleEndian(char* out, uint64_t value, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i)
    out[i] = static_cast<char>(value >> (8 * i));
}

uint64_t GetLittleEndian(const char* in, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i)
    value |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  return value;
}

uint32_t Crc32(std::string_view bytes) {
  return static_cast<uint32_t>(
      crc32_z(crc32_z(0, nullptr, 0), reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

}  // namespace

std::string_view RecordTypeName(RecordType type) {
  switch (type) {
    case RecordType::kStoreFormat:
      return "store format";
    case RecordType::kSession:
      return "session";
    case RecordType::kTurn:
      return "turn";
    case RecordType::kKvSegment:
      return "kv segment";
    case RecordType::kDocument:
      return "document";
  }
  return "unknown";
}

std::string EncodeRecord(RecordType type, std::initializer_list<std::string_view> payload_parts) {
  size_t payload_size = 0;
  for (std::string_view part : payload_parts)
    payload_size += part.size();
  std::string record(kRecordHeaderSize, '\0');
  record.reserve(kRecordHeaderSize + payload_size);
  for (std::string_view part : payload_parts)
    record.append(part);

  record.replace(0, kRecordMagic.size(), kRecordMagic);
  PutLittleEndian(&record[kVersionOffset], kRecordFormatVersion, 2);
  PutLittleEndian(&record[kTypeOffset], static_cast<uint16_t>(type), 2);
  PutLittleEndian(&record[kLengthOffset], payload_size, 8);
  PutLittleEndian(&record[kCrcOffset], Crc32(std::string_view(record).substr(kRecordHeaderSize)),
                  4);
  return record;
}

absl::StatusOr<std::string_view> DecodeRecord(std::string_view record, RecordType expected_type) {
  if (record.size() < kRecordHeaderSize) {
    return absl::DataLossError(
        absl::StrFormat("truncated: %d bytes, shorter than the %d-byte record header",
                        record.size(), kRecordHeaderSize));
  }
  if (record.substr(0, kRecordMagic.size()) != kRecordMagic) {
    return absl::DataLossError(absl::StrCat(
        "bad magic \"", absl::CHexEscape(AbslView(record.substr(0, kRecordMagic.size()))),
        "\" (expected \"", AbslView(kRecordMagic), "\")"));
  }
  const uint64_t version = GetLittleEndian(&record[kVersionOffset], 2);
  if (version != kRecordFormatVersion) {
    return absl::DataLossError(
        absl::StrFormat("unknown record format version %d (this build reads version %d)", version,
                        kRecordFormatVersion));
  }
  const uint64_t type = GetLittleEndian(&record[kTypeOffset], 2);
  if (type != static_cast<uint16_t>(expected_type)) {
    return absl::DataLossError(absl::StrFormat("record type %d where a %s record (type %d) belongs",
                                               type, RecordTypeName(expected_type),
                                               static_cast<uint16_t>(expected_type)));
  }
  const uint64_t declared_length = GetLittleEndian(&record[kLengthOffset], 8);
  const std::string_view payload = record.substr(kRecordHeaderSize);
  if (declared_length > payload.size()) {
    return absl::DataLossError(
        absl::StrFormat("truncated: header declares %d payload bytes, only %d present",
                        declared_length, payload.size()));
  }
  if (declared_length < payload.size()) {
    return absl::DataLossError(
        absl::StrFormat("length mismatch: header declares %d payload bytes, %d present",
                        declared_length, payload.size()));
  }
  const uint32_t stored_crc = static_cast<uint32_t>(GetLittleEndian(&record[kCrcOffset], 4));
  const uint32_t computed_crc = Crc32(payload);
  if (stored_crc != computed_crc) {
    return absl::DataLossError(absl::StrFormat(
        "checksum mismatch: stored crc32 %08x, payload has %08x", stored_crc, computed_crc));
  }
  return payload;
}

std::optional<uint16_t> PeekRecordFormatVersion(std::string_view record) {
  if (record.size() < kTypeOffset || record.substr(0, kRecordMagic.size()) != kRecordMagic) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(GetLittleEndian(&record[kVersionOffset], 2));
}

}  // namespace gistmem::store
