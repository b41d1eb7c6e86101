#include "store/format_marker.h"

#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "store/keys.h"
#include "store/record_codec.h"
#include "store/records.h"
#include "store/rocks_status.h"

namespace gistmem::store {
namespace {

absl::Status WriteMarker(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* sessions) {
  std::unique_ptr<rocksdb::Iterator> any_session(db.NewIterator(rocksdb::ReadOptions(), sessions));
  any_session->SeekToFirst();
  if (any_session->Valid()) {
    return absl::FailedPreconditionError(
        "the database holds sessions but no format marker: not a gistmem store");
  }
  if (absl::Status status = FromRocksStatus(any_session->status(), "scanning sessions");
      !status.ok()) {
    return status;
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = true;
  return FromRocksStatus(
      db.Put(write_options, std::string(kFormatKey), EncodeStoreFormatValue(kStoreFormatVersion)),
      "writing the format marker");
}

}  // namespace

absl::Status EnsureFormatMarker(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* sessions) {
  std::string value;
  const rocksdb::Status read = db.Get(rocksdb::ReadOptions(), std::string(kFormatKey), &value);
  if (read.IsNotFound()) return WriteMarker(db, sessions);
  if (!read.ok()) return FromRocksStatus(read, "reading the format marker");

  // A newer build may have changed the envelope itself; that is not damage.
  const std::optional<uint16_t> envelope_version = PeekRecordFormatVersion(value);
  if (envelope_version.has_value() && *envelope_version > kRecordFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("the database was written with record format ", *envelope_version,
                     "; this build reads ", kRecordFormatVersion));
  }
  absl::StatusOr<gistmem::store::v1::StoreFormat> format = DecodeStoreFormatValue(value);
  if (!format.ok()) return AtKey(format.status(), "default", kFormatKey);
  if (format->version() != kStoreFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat("the database has store format ",
                                                      format->version(), "; this build reads ",
                                                      kStoreFormatVersion));
  }
  return absl::OkStatus();
}

}  // namespace gistmem::store
