// Opens the session store a ServerConfig names (--store rocksdb:PATH | rados:POOL), and for a
// RADOS store runs its garbage collection in the background.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "service/config.h"
#include "store/store.h"

namespace gistmem::service {

// The store, not yet wrapped for metrics. UNIMPLEMENTED for rados:POOL in a build without
// librados; otherwise the store's own error (NOT_FOUND pool, UNAVAILABLE cluster, ...).
absl::StatusOr<std::unique_ptr<store::Store>> OpenStore(const ServerConfig& config);

// Every `config.store.gc_interval`, removes the segments of a RADOS store that no session
// names (store/rados_store.h CollectGarbage); does nothing for other stores or interval 0.
// `store` must outlive it; the destructor stops the thread (waiting for a pass under way).
class StoreCollector {
 public:
  StoreCollector(store::Store& store, const StoreConfig& config);
  ~StoreCollector();
  StoreCollector(const StoreCollector&) = delete;
  StoreCollector& operator=(const StoreCollector&) = delete;

 private:
  void Run(store::Store& store, const StoreConfig& config);
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace gistmem::service
