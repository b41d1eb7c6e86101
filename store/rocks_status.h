// RocksDB statuses as absl::Status, with the codes the service passes on to clients.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "rocksdb/status.h"

namespace gistmem::store {

// OK stays OK. Corruption -> DATA_LOSS; an out-of-space I/O error -> RESOURCE_EXHAUSTED;
// Busy, TryAgain, TimedOut -> UNAVAILABLE; everything else -> INTERNAL. The message starts with
// `context` (what the store was doing).
absl::Status FromRocksStatus(const rocksdb::Status& status, std::string_view context);

}  // namespace gistmem::store
