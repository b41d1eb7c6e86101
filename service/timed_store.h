// A store::Store that times every call of the store it wraps and reports the durations to
// service/metrics.h (gistmem_store_read_seconds / gistmem_store_write_seconds, label op);
// results pass through unchanged. Thread-safe as the wrapped store is.
#pragma once

#include <memory>

#include "store/store.h"

namespace gistmem::service {

std::unique_ptr<store::Store> TimeStoreCalls(std::unique_ptr<store::Store> store);

}  // namespace gistmem::service
