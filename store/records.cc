#include "store/records.h"

#include "absl/strings/str_cat.h"
#include "store/absl_view.h"
#include "store/keys.h"
#include "store/record_codec.h"

namespace gistmem::store {
namespace {

template <typename Message>
absl::StatusOr<Message> DecodeMessage(std::string_view value, RecordType type) {
  absl::StatusOr<std::string_view> payload = DecodeRecord(value, type);
  if (!payload.ok()) return payload.status();
  Message message;
  if (!message.ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
    return absl::DataLossError(absl::StrCat("unparsable ", Message::descriptor()->name()));
  }
  return message;
}

}  // namespace

std::string EncodeSessionValue(const gistmem::store::v1::SessionRecord& record) {
  return EncodeRecord(RecordType::kSession, record.SerializeAsString());
}

std::string EncodeTurnValue(const gistmem::store::v1::TurnRecord& record) {
  return EncodeRecord(RecordType::kTurn, record.SerializeAsString());
}

std::string EncodeStoreFormatValue(uint32_t version) {
  gistmem::store::v1::StoreFormat format;
  format.set_version(version);
  return EncodeRecord(RecordType::kStoreFormat, format.SerializeAsString());
}

absl::StatusOr<gistmem::store::v1::SessionRecord> DecodeSessionValue(std::string_view value) {
  return DecodeMessage<gistmem::store::v1::SessionRecord>(value, RecordType::kSession);
}

absl::StatusOr<gistmem::store::v1::TurnRecord> DecodeTurnValue(std::string_view value) {
  return DecodeMessage<gistmem::store::v1::TurnRecord>(value, RecordType::kTurn);
}

absl::StatusOr<gistmem::store::v1::StoreFormat> DecodeStoreFormatValue(std::string_view value) {
  return DecodeMessage<gistmem::store::v1::StoreFormat>(value, RecordType::kStoreFormat);
}

absl::Status AtKey(const absl::Status& status, std::string_view family, std::string_view key) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("column family '", AbslView(family), "', key '",
                                                  PrintableKey(key), "': ", status.message()));
}

}  // namespace gistmem::store
