#include "store/rocks_options.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "rocksdb/cache.h"
#include "rocksdb/table.h"
#include "store/rocks_logger.h"

namespace gistmem::store {
namespace {

constexpr int kFamilies = 5;  // default, sessions, transcript, kv, documents (store/keys.h)

}  // namespace

int64_t RocksMemoryBudget::MaxMemtableBytes(int families) const {
  const int64_t others = int64_t{families - 1} * write_buffer_bytes;
  return int64_t{write_buffers_per_family} * (kv_write_buffer_bytes + others);
}

void NoSpaceRecovery::OnBackgroundError(rocksdb::BackgroundErrorReason /*reason*/,
                                        rocksdb::Status* error) {
  errors_seen_.fetch_add(1);
  spdlog::warn("store: RocksDB stopped on {} (writes resume when they fit again)",
               error->ToString());
}

void NoSpaceRecovery::OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/,
                                           rocksdb::Status error, bool* auto_recovery) {
  // A soft error (a compaction out of space) leaves writes on; RocksDB clears it itself. A
  // hard one stops writes: the store resumes it before its next write instead of waiting for
  // RocksDB's own poll.
  if (error.severity() >= rocksdb::Status::Severity::kHardError) *auto_recovery = false;
}

rocksdb::DBOptions MakeDbOptions(bool create_if_missing, rocksdb::Env* env,
                                 const RocksMemoryBudget& budget,
                                 std::shared_ptr<NoSpaceRecovery> recovery) {
  rocksdb::DBOptions options;
  options.create_if_missing = create_if_missing;
  options.create_missing_column_families = true;
  options.paranoid_checks = true;
  if (env != nullptr) options.env = env;
  // RocksDB's info log goes through spdlog, not a LOG file of its own (store/rocks_logger.h).
  options.info_log = MakeSpdlogRocksLogger();
  options.listeners.push_back(std::move(recovery));
  // Past this much write-ahead log, the families holding the oldest log are flushed (the
  // default family's memtable entry of RocksStore among them): RocksDB's default is four
  // times the memtables.
  options.max_total_wal_size = static_cast<uint64_t>(budget.MaxMemtableBytes(kFamilies));
  return options;
}

rocksdb::ColumnFamilyOptions MakeFamilyOptions(bool is_kv_family, const RocksMemoryBudget& budget,
                                               std::shared_ptr<rocksdb::Cache> block_cache) {
  rocksdb::ColumnFamilyOptions options;
  options.write_buffer_size =
      static_cast<size_t>(is_kv_family ? budget.kv_write_buffer_bytes : budget.write_buffer_bytes);
  options.max_write_buffer_number = budget.write_buffers_per_family;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = std::move(block_cache);
  // Index and filter blocks in the cache too, so that they count in its capacity rather than
  // growing with the number of table files.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  if (is_kv_family) {
    // KV segments are large (up to megabytes) and written once: kept in blob files, they are
    // not rewritten by every compaction of the keys around them.
    options.enable_blob_files = true;
    options.min_blob_size = 4096;
    options.enable_blob_garbage_collection = true;
  }
  return options;
}

}  // namespace gistmem::store
