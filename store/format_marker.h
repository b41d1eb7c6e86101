// The `format` key of the default column family: which on-disk layout a database uses, so that
// this build refuses a database written by a newer one instead of misreading it.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "rocksdb/db.h"

namespace gistmem::store {

inline constexpr uint32_t kStoreFormatVersion = 1;

// Writes the marker into a database that has none and no sessions yet; checks it otherwise.
// FAILED_PRECONDITION for a newer (or unknown older) format or a marker-less database that
// already holds sessions; DATA_LOSS for a damaged marker.
absl::Status EnsureFormatMarker(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* sessions);

}  // namespace gistmem::store
