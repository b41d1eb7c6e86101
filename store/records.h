// Values of the `sessions`, `transcript` and `default` column families: a proto message in the
// record envelope, and the DATA_LOSS message that says where a damaged one lives.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gistmem/store/v1/records.pb.h"

namespace gistmem::store {

std::string EncodeSessionValue(const gistmem::store::v1::SessionRecord& record);
std::string EncodeTurnValue(const gistmem::store::v1::TurnRecord& record);
std::string EncodeStoreFormatValue(uint32_t version);

// Errors are DATA_LOSS saying what failed (not yet where; see AtKey).
absl::StatusOr<gistmem::store::v1::SessionRecord> DecodeSessionValue(std::string_view value);
absl::StatusOr<gistmem::store::v1::TurnRecord> DecodeTurnValue(std::string_view value);
absl::StatusOr<gistmem::store::v1::StoreFormat> DecodeStoreFormatValue(std::string_view value);

// `status` with its message prefixed by the column family and key it came from.
absl::Status AtKey(const absl::Status& status, std::string_view family, std::string_view key);

}  // namespace gistmem::store
