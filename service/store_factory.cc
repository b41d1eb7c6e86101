#include "service/store_factory.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "store/rocks_store.h"
#if defined(GISTMEM_HAVE_RADOS)
#include "store/rados_store.h"
#endif

namespace gistmem::service {

absl::StatusOr<std::unique_ptr<store::Store>> OpenStore(const ServerConfig& config) {
  if (config.store.kind == StoreConfig::Kind::kRocksDb) {
    absl::StatusOr<std::unique_ptr<store::RocksStore>> rocks =
        store::RocksStore::Open(config.db_path);
    if (!rocks.ok()) return rocks.status();
    return std::unique_ptr<store::Store>(*std::move(rocks));
  }
#if defined(GISTMEM_HAVE_RADOS)
  absl::StatusOr<std::unique_ptr<store::RadosStore>> rados =
      store::RadosStore::Open({.pool = config.store.rados_pool,
                               .conf_file = config.store.ceph_conf.string(),
                               .client_id = config.store.ceph_client_id});
  if (!rados.ok()) return rados.status();
  return std::unique_ptr<store::Store>(*std::move(rados));
#else
  return absl::UnimplementedError(
      absl::StrCat("--store rados:", config.store.rados_pool,
                   ": this gistmem-server was built without librados (install librados-dev)"));
#endif
}

StoreCollector::StoreCollector(store::Store& store, const StoreConfig& config) {
  if (config.kind != StoreConfig::Kind::kRados || config.gc_interval <= absl::ZeroDuration()) {
    return;
  }
  thread_ = std::thread([this, &store, config] { Run(store, config); });
}

StoreCollector::~StoreCollector() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StoreCollector::Run([[maybe_unused]] store::Store& store,
                         [[maybe_unused]] const StoreConfig& config) {
#if defined(GISTMEM_HAVE_RADOS)
  auto* rados = dynamic_cast<store::RadosStore*>(&store);
  if (rados == nullptr) return;
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, absl::ToChronoSeconds(config.gc_interval),
                         [this] { return stopping_; })) {
    lock.unlock();
    absl::StatusOr<store::GarbageReport> report = rados->CollectGarbage(config.gc_min_age);
    if (report.ok()) {
      spdlog::info("store gc: {} segments seen, {} removed, {} index entries removed",
                   report->segments_seen, report->segments_removed, report->index_entries_removed);
    } else {
      spdlog::warn("store gc: {}", report.status().ToString());
    }
    lock.lock();
  }
#endif
}

}  // namespace gistmem::service
