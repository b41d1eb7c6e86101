// RocksDB's options for the store: how much memory it may hold (a fixed share of the server's
// memory overhead, service/README.md "Memory") and how it recovers from a full disk.
//
// Memory: one LRU block cache for every family's table blocks, index and filter blocks
// included, and small memtables (write buffers) per family. RocksDB's default, 64 MiB memtables
// per family (two each) and an 8 MiB cache per family, grew the server's RSS by a few hundred
// MiB under load, none of it in --max_cache_bytes.
//
// Full disk: RocksDB stops writing after a write or flush fails with "no space". Its own
// recovery waits until the free space reaches its largest write buffer (polled every 5 s) and
// meanwhile refuses DB::Resume; NoSpaceRecovery turns that recovery off, so that the store
// resumes the database itself before its next write (RocksStore::WriteSynced) and the write
// goes through as soon as there is room for it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "rocksdb/listener.h"
#include "rocksdb/options.h"

namespace gistmem::store {

// What RocksDB may keep in memory, all column families together.
struct RocksMemoryBudget {
  int64_t block_cache_bytes = int64_t{8} << 20;      // shared by every family's table blocks
  int64_t kv_write_buffer_bytes = int64_t{4} << 20;  // one memtable of the kv family
  int64_t write_buffer_bytes = int64_t{1} << 20;     // one memtable of each other family
  // Memtables a family may hold before its writes wait for a flush (one being written, one
  // flushing): RocksDB's max_write_buffer_number.
  int write_buffers_per_family = 2;

  // The most bytes of memtables with `families` column families, kv among them: every
  // family's write buffers full (each may pass its size by the one write that filled it).
  int64_t MaxMemtableBytes(int families) const;
};

// Counts RocksDB's background errors (a failed write or flush) and keeps RocksDB from
// resuming by itself after a hard error; whoever resumes with DB::Resume compares
// errors_seen() before and after. Thread-safe.
class NoSpaceRecovery final : public rocksdb::EventListener {
 public:
  const char* Name() const override { return "gistmem.NoSpaceRecovery"; }
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* error) override;
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason reason, rocksdb::Status error,
                            bool* auto_recovery) override;

  int64_t errors_seen() const { return errors_seen_.load(); }

 private:
  std::atomic<int64_t> errors_seen_{0};
};

// Database-wide options: the info log through spdlog, paranoid checks, `recovery` as a
// listener, write-ahead logs kept to the memtables' size under `budget`.
rocksdb::DBOptions MakeDbOptions(bool create_if_missing, rocksdb::Env* env,
                                 const RocksMemoryBudget& budget,
                                 std::shared_ptr<NoSpaceRecovery> recovery);

// One family's options under `budget`; every family of one database shares `block_cache`.
// The kv family keeps its values (KV segments, up to megabytes, written once) in blob files.
rocksdb::ColumnFamilyOptions MakeFamilyOptions(bool is_kv_family, const RocksMemoryBudget& budget,
                                               std::shared_ptr<rocksdb::Cache> block_cache);

}  // namespace gistmem::store
