// Store on RocksDB: column families `sessions`, `transcript`, `kv` and `documents` (keys in
// store/keys.h), every value in the checksummed envelope of store/record_codec.h, one synced
// WriteBatch per change.
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "store/rocks_options.h"
#include "store/session_locks.h"
#include "store/store.h"

namespace gistmem::store {

struct RocksStoreOptions {
  bool create_if_missing = true;
  // Where RocksDB does its file I/O (tests pass one that injects faults); must outlive the
  // store. nullptr: the default.
  rocksdb::Env* env = nullptr;
  // RocksDB's block cache and memtables (store/rocks_options.h).
  RocksMemoryBudget memory;
};

// What RocksStore::CheckAll found: every session and document it could name, read whole
// (records, transcript, KV segments, checksums), and those that cannot be.
struct DamagedEntry {
  std::string kind;  // "session" or "document"
  std::string tenant;
  std::string id;
  absl::Status status;  // DATA_LOSS (or another error) naming the damaged key
};
struct StoreCheckReport {
  int64_t sessions_checked = 0;
  int64_t documents_checked = 0;
  std::vector<DamagedEntry> damaged;
  // Damage found while listing keys (a corrupt table block); the sessions and documents it
  // hides are named from the table files' key ranges and the other column families.
  std::vector<std::string> scan_errors;
};

// A damaged session's readable remains: its record when it decodes, and each transcript turn
// that does (in order), for `gistmem-store export`.
struct SessionRemains {
  std::optional<SessionRecord> session;
  std::vector<TurnRecord> turns;
  std::vector<std::string> unreadable;  // keys (printable) of records that do not decode
};

class RocksStore final : public Store {
 public:
  // Opens (or creates) the database at `path` with all column families and paranoid checks.
  // NOT_FOUND when it is missing and !create_if_missing; FAILED_PRECONDITION when its format
  // marker says a newer build wrote it.
  static absl::StatusOr<std::unique_ptr<RocksStore>> Open(const std::filesystem::path& path,
                                                          const RocksStoreOptions& options = {});
  ~RocksStore() override;
  RocksStore(const RocksStore&) = delete;
  RocksStore& operator=(const RocksStore&) = delete;

  absl::Status CreateSession(const SessionRecord& record) override;
  absl::StatusOr<SessionRecord> GetSession(std::string_view tenant,
                                           std::string_view session_id) const override;
  absl::StatusOr<SessionPage> ListSessions(std::string_view tenant, int page_size,
                                           std::string_view page_token) const override;
  absl::Status DeleteSession(std::string_view tenant, std::string_view session_id) override;
  absl::StatusOr<SessionRecord> ForkSession(std::string_view tenant,
                                            std::string_view source_session_id,
                                            std::string_view new_session_id) override;
  absl::Status CommitTurn(const TurnCommit& commit) override;
  absl::StatusOr<std::vector<TurnRecord>> LoadTranscript(
      std::string_view tenant, std::string_view session_id) const override;
  absl::StatusOr<std::vector<KvSegment>> LoadKvSegments(std::string_view tenant,
                                                        std::string_view session_id) const override;
  absl::StatusOr<SessionStorageStats> Stats(std::string_view tenant,
                                            std::string_view session_id) const override;
  absl::StatusOr<int64_t> CountSessions() const override;
  absl::Status PutDocument(const DocumentRecord& record, std::string_view payload) override;
  absl::StatusOr<StoredDocument> GetDocument(std::string_view tenant,
                                             std::string_view document_id) const override;
  // RocksDB's live SST files plus memtables, over every column family.
  int64_t ApproximateDiskBytes() const override;

  // Store maintenance (store/rocks_store_check.cc; gistmem-store check|drop|export).
  // Reads every session and document of every tenant; a damaged one does not stop the check.
  StoreCheckReport CheckAll() const;
  // Removes a document whatever its state (sessions that attached it then fail to load it).
  absl::Status DeleteDocument(std::string_view tenant, std::string_view document_id);
  // What can still be read of a session, record by record.
  SessionRemains ReadRemains(std::string_view tenant, std::string_view session_id) const;

 private:
  // Called for each key/value under a prefix; a non-OK status stops the scan and is returned.
  using Visitor = absl::FunctionRef<absl::Status(std::string_view key, std::string_view value)>;

  RocksStore(std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
             std::shared_ptr<NoSpaceRecovery> recovery);

  // The raw value, nothing when absent.
  absl::StatusOr<std::optional<std::string>> ReadValue(rocksdb::ColumnFamilyHandle* family,
                                                       const std::string& key,
                                                       const rocksdb::Snapshot* snapshot) const;
  // NOT_FOUND when absent, DATA_LOSS when damaged or filed under another key.
  absl::StatusOr<SessionRecord> ReadSession(std::string_view tenant, std::string_view session_id,
                                            const rocksdb::Snapshot* snapshot) const;
  absl::Status RequireSession(std::string_view tenant, std::string_view session_id,
                              const rocksdb::Snapshot* snapshot) const;
  absl::Status ScanPrefix(rocksdb::ColumnFamilyHandle* family, const std::string& prefix,
                          const rocksdb::Snapshot* snapshot, Visitor visit) const;
  absl::Status WriteSynced(rocksdb::WriteBatch& batch, std::string_view what);
  // DB::Resume after the errors counted by recovery_.
  rocksdb::Status ResumeWrites();
  // An entry in the default family's active memtable, so that a resume always switches logs.
  void KeepActiveMemtableEntry();
  // OK when transcript or KV keys of the session exist, NOT_FOUND when none do, the read's
  // error otherwise.
  absl::Status LiveDataUnder(std::string_view tenant, std::string_view session_id) const;

  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // all open families, destroyed on close
  rocksdb::ColumnFamilyHandle* sessions_ = nullptr;
  rocksdb::ColumnFamilyHandle* transcript_ = nullptr;
  rocksdb::ColumnFamilyHandle* kv_ = nullptr;
  rocksdb::ColumnFamilyHandle* documents_ = nullptr;
  std::mutex documents_mutex_;                 // a put checks and writes under it
  std::shared_ptr<NoSpaceRecovery> recovery_;  // counts the errors that stopped writes
  std::atomic<int64_t> resumed_through_{0};    // errors_seen() at the last good Resume
  std::mutex resume_mutex_;                    // one ResumeWrites at a time
  SessionLocks locks_;
};

}  // namespace gistmem::store
