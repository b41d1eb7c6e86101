#include "store/rocks_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "rocksdb/cache.h"
#include "rocksdb/options.h"
#include "rocksdb/snapshot.h"
#include "rocksdb/write_batch.h"
#include "store/absl_view.h"
#include "store/format_marker.h"
#include "store/ids.h"
#include "store/keys.h"
#include "store/kv_segment_codec.h"
#include "store/page_token.h"
#include "store/records.h"
#include "store/rocks_status.h"
#include "store/turn_commit_check.h"

namespace gistmem::store {
namespace {

absl::Status ValidateDocumentIds(std::string_view tenant, std::string_view document_id) {
  if (absl::Status tenant_ok = ValidateId("tenant", tenant); !tenant_ok.ok()) return tenant_ok;
  return ValidateId("document id", document_id);
}

absl::Status ValidateSessionIds(std::string_view tenant, std::string_view session_id) {
  if (absl::Status status = ValidateId("tenant", tenant); !status.ok()) return status;
  return ValidateId("session id", session_id);
}

// Our families plus any a newer build added (RocksDB refuses to open without all of them).
absl::StatusOr<std::vector<std::string>> FamiliesToOpen(const rocksdb::DBOptions& options,
                                                        const std::string& path) {
  std::vector<std::string> names;
  const rocksdb::Status listed = rocksdb::DB::ListColumnFamilies(options, path, &names);
  if (!listed.ok() && std::filesystem::exists(std::filesystem::path(path) / "CURRENT")) {
    return FromRocksStatus(listed, absl::StrCat("listing column families of ", path));
  }
  for (std::string_view wanted :
       {std::string_view(rocksdb::kDefaultColumnFamilyName), kSessionsFamily, kTranscriptFamily,
        kKvFamily, kDocumentsFamily}) {
    if (std::find(names.begin(), names.end(), wanted) == names.end()) {
      names.emplace_back(wanted);
    }
  }
  return names;
}

// The session record stored under tenant/session_id; DATA_LOSS naming the key when it is
// damaged or describes another session (a value written under the wrong key).
absl::StatusOr<SessionRecord> DecodeSessionAt(std::string_view tenant, std::string_view session_id,
                                              std::string_view value) {
  const std::string key = SessionKey(tenant, session_id);
  absl::StatusOr<SessionRecord> record = DecodeSessionValue(value);
  if (!record.ok()) return AtKey(record.status(), kSessionsFamily, key);
  if (record->tenant() != tenant || record->session_id() != session_id) {
    return AtKey(absl::DataLossError(absl::StrCat("record belongs to session \"", record->tenant(),
                                                  "/", record->session_id(), "\"")),
                 kSessionsFamily, key);
  }
  return record;
}

rocksdb::ColumnFamilyHandle* FindFamily(const std::vector<rocksdb::ColumnFamilyHandle*>& handles,
                                        std::string_view name) {
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    if (handle->GetName() == name) return handle;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RocksStore>> RocksStore::Open(const std::filesystem::path& path,
                                                             const RocksStoreOptions& options) {
  if (!options.create_if_missing && !std::filesystem::exists(path / "CURRENT")) {
    return absl::NotFoundError(absl::StrCat("no store at ", path.string()));
  }
  auto recovery = std::make_shared<NoSpaceRecovery>();
  const rocksdb::DBOptions db_options =
      MakeDbOptions(options.create_if_missing, options.env, options.memory, recovery);
  const std::shared_ptr<rocksdb::Cache> block_cache =
      rocksdb::NewLRUCache(static_cast<size_t>(options.memory.block_cache_bytes));

  absl::StatusOr<std::vector<std::string>> names = FamiliesToOpen(db_options, path.string());
  if (!names.ok()) return names.status();
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : *names) {
    descriptors.emplace_back(name,
                             MakeFamilyOptions(name == kKvFamily, options.memory, block_cache));
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  const rocksdb::Status opened =
      rocksdb::DB::Open(db_options, path.string(), descriptors, &handles, &raw_db);
  if (!opened.ok()) return FromRocksStatus(opened, absl::StrCat("opening ", path.string()));

  // From here on the store owns the database, so every error path closes it.
  std::unique_ptr<RocksStore> store(
      new RocksStore(std::unique_ptr<rocksdb::DB>(raw_db), std::move(handles), recovery));
  if (absl::Status marker = EnsureFormatMarker(*store->db_, store->sessions_); !marker.ok()) {
    return marker;
  }
  return store;
}

RocksStore::RocksStore(std::unique_ptr<rocksdb::DB> db,
                       std::vector<rocksdb::ColumnFamilyHandle*> handles,
                       std::shared_ptr<NoSpaceRecovery> recovery)
    : db_(std::move(db)),
      handles_(std::move(handles)),
      sessions_(FindFamily(handles_, kSessionsFamily)),
      transcript_(FindFamily(handles_, kTranscriptFamily)),
      kv_(FindFamily(handles_, kKvFamily)),
      documents_(FindFamily(handles_, kDocumentsFamily)),
      recovery_(std::move(recovery)) {}

RocksStore::~RocksStore() {
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  // Every acknowledged write was synced; a failing close loses nothing that was promised.
  db_->Close().PermitUncheckedError();
}

absl::StatusOr<std::optional<std::string>> RocksStore::ReadValue(
    rocksdb::ColumnFamilyHandle* family, const std::string& key,
    const rocksdb::Snapshot* snapshot) const {
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot;
  std::string value;
  const rocksdb::Status status = db_->Get(read_options, family, key, &value);
  if (status.IsNotFound()) return std::nullopt;
  if (!status.ok()) {
    return FromRocksStatus(status,
                           absl::StrCat("reading ", family->GetName(), " ", PrintableKey(key)));
  }
  return value;
}

absl::StatusOr<SessionRecord> RocksStore::ReadSession(std::string_view tenant,
                                                      std::string_view session_id,
                                                      const rocksdb::Snapshot* snapshot) const {
  const std::string key = SessionKey(tenant, session_id);
  absl::StatusOr<std::optional<std::string>> value = ReadValue(sessions_, key, snapshot);
  if (!value.ok()) return value.status();
  if (!value->has_value()) {
    return absl::NotFoundError(absl::StrCat("no session \"", AbslView(session_id), "\""));
  }
  return DecodeSessionAt(tenant, session_id, **value);
}

absl::Status RocksStore::RequireSession(std::string_view tenant, std::string_view session_id,
                                        const rocksdb::Snapshot* snapshot) const {
  absl::StatusOr<std::optional<std::string>> value =
      ReadValue(sessions_, SessionKey(tenant, session_id), snapshot);
  if (!value.ok()) return value.status();
  if (!value->has_value()) {
    return absl::NotFoundError(absl::StrCat("no session \"", AbslView(session_id), "\""));
  }
  return absl::OkStatus();
}

absl::Status RocksStore::ScanPrefix(rocksdb::ColumnFamilyHandle* family, const std::string& prefix,
                                    const rocksdb::Snapshot* snapshot, Visitor visit) const {
  const std::string end = PrefixEnd(prefix);
  const rocksdb::Slice upper_bound(end);
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot;
  read_options.iterate_upper_bound = &upper_bound;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, family));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    absl::Status status = visit(std::string_view(it->key().data(), it->key().size()),
                                std::string_view(it->value().data(), it->value().size()));
    if (!status.ok()) return status;
  }
  return FromRocksStatus(it->status(),
                         absl::StrCat("scanning ", family->GetName(), " ", PrintableKey(prefix)));
}

absl::Status RocksStore::WriteSynced(rocksdb::WriteBatch& batch, std::string_view what) {
  rocksdb::WriteOptions write_options;
  write_options.sync = true;
  // A failed write or flush (a full disk) leaves RocksDB refusing writes until it is resumed
  // (store/rocks_options.h): resume first, so that writes go on once there is room again.
  // When it cannot (still no space), the write below returns the error that stopped it.
  if (recovery_->errors_seen() != resumed_through_.load()) {
    if (const rocksdb::Status resumed = ResumeWrites(); !resumed.ok()) {
      spdlog::warn("store: writes stay stopped: {}", resumed.ToString());
    }
  }
  KeepActiveMemtableEntry();
  const rocksdb::Status written = db_->Write(write_options, &batch);
  return FromRocksStatus(written, what);
}

rocksdb::Status RocksStore::ResumeWrites() {
  std::lock_guard lock(resume_mutex_);
  const int64_t errors = recovery_->errors_seen();
  if (errors == resumed_through_.load()) return rocksdb::Status::OK();  // another writer did
  const rocksdb::Status resumed = db_->Resume();
  if (resumed.ok()) {
    resumed_through_ = errors;  // an error during or after Resume: resume again next time
    spdlog::info("store: writes resumed");
  }
  return resumed;
}

void RocksStore::KeepActiveMemtableEntry() {
  // DB::Resume flushes the memtables that hold something, and switching them starts a new
  // write-ahead log. With every memtable empty (right after opening, or after a resume) it
  // would switch nothing, and writes would go on in the log whose write failed, where RocksDB
  // 7.8 asserts (WritableFileWriter keeps the error). An entry that skips the log keeps the
  // default family's memtable from being empty.
  rocksdb::ColumnFamilyHandle* family = db_->DefaultColumnFamily();
  uint64_t entries = 0;
  if (db_->GetIntProperty(family, rocksdb::DB::Properties::kNumEntriesActiveMemTable, &entries) &&
      entries > 0) {
    return;
  }
  rocksdb::WriteOptions no_log;
  no_log.disableWAL = true;
  // It fails only while writes are stopped, and then so does the write that follows it.
  db_->Put(no_log, family, "gistmem:memtable-entry", "").PermitUncheckedError();
}

absl::Status RocksStore::CreateSession(const SessionRecord& record) {
  if (absl::Status ids = ValidateSessionIds(record.tenant(), record.session_id()); !ids.ok()) {
    return ids;
  }
  const std::string key = SessionKey(record.tenant(), record.session_id());
  SessionLocks::Guard guard = locks_.Lock(key);
  absl::StatusOr<std::optional<std::string>> existing = ReadValue(sessions_, key, nullptr);
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) {
    return absl::AlreadyExistsError(
        absl::StrCat("session \"", record.session_id(), "\" already exists"));
  }
  // Nothing of an earlier session of this id is left: DeleteSession removes all in one batch.
  rocksdb::WriteBatch batch;
  batch.Put(sessions_, key, EncodeSessionValue(record));
  return WriteSynced(batch, absl::StrCat("creating session ", key));
}

absl::StatusOr<SessionRecord> RocksStore::GetSession(std::string_view tenant,
                                                     std::string_view session_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  return ReadSession(tenant, session_id, nullptr);
}

absl::StatusOr<SessionPage> RocksStore::ListSessions(std::string_view tenant, int page_size,
                                                     std::string_view page_token) const {
  if (absl::Status id = ValidateId("tenant", tenant); !id.ok()) return id;
  absl::StatusOr<PageRequest> request = ParsePageRequest(page_size, page_token);
  if (!request.ok()) return request.status();
  page_size = request->page_size;
  const std::string after =
      request->after_id.empty() ? std::string() : SessionKey(tenant, request->after_id);

  const std::string prefix = TenantPrefix(tenant);
  const std::string end = PrefixEnd(prefix);
  const rocksdb::Slice upper_bound(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper_bound;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, sessions_));
  it->Seek(after.empty() ? prefix : after);
  if (!after.empty() && it->Valid() && it->key() == after) it->Next();

  SessionPage page;
  std::string last_id;
  for (int listed = 0; listed < page_size && it->Valid(); ++listed, it->Next()) {
    const std::string_view key(it->key().data(), it->key().size());
    last_id = std::string(key.substr(prefix.size()));
    absl::StatusOr<SessionRecord> record =
        DecodeSessionAt(tenant, last_id, std::string_view(it->value().data(), it->value().size()));
    if (record.ok()) {
      page.sessions.push_back(*std::move(record));
    } else {
      page.unreadable.push_back({last_id, record.status()});
    }
  }
  if (it->Valid()) page.next_page_token = EncodePageToken(last_id);
  if (absl::Status status = FromRocksStatus(it->status(), absl::StrCat("listing ", prefix));
      !status.ok()) {
    return status;
  }
  return page;
}

absl::Status RocksStore::DeleteSession(std::string_view tenant, std::string_view session_id) {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  const std::string key = SessionKey(tenant, session_id);
  SessionLocks::Guard guard = locks_.Lock(key);
  // Existence only: a damaged session must stay deletable.
  if (absl::Status exists = RequireSession(tenant, session_id, nullptr); !exists.ok()) {
    return exists;
  }
  const std::string prefix = SessionDataPrefix(tenant, session_id);
  rocksdb::WriteBatch batch;
  batch.Delete(sessions_, key);
  batch.DeleteRange(transcript_, prefix, PrefixEnd(prefix));
  batch.DeleteRange(kv_, prefix, PrefixEnd(prefix));
  return WriteSynced(batch, absl::StrCat("deleting session ", key));
}

absl::StatusOr<SessionRecord> RocksStore::ForkSession(std::string_view tenant,
                                                      std::string_view source_session_id,
                                                      std::string_view new_session_id) {
  if (absl::Status ids = ValidateSessionIds(tenant, source_session_id); !ids.ok()) return ids;
  if (absl::Status id = ValidateId("session id", new_session_id); !id.ok()) return id;
  const std::string source_key = SessionKey(tenant, source_session_id);
  const std::string new_key = SessionKey(tenant, new_session_id);
  SessionLocks::Guard guard = locks_.LockBoth(source_key, new_key);

  absl::StatusOr<SessionRecord> record = ReadSession(tenant, source_session_id, nullptr);
  if (!record.ok()) return record.status();
  absl::StatusOr<std::optional<std::string>> existing = ReadValue(sessions_, new_key, nullptr);
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) {
    return absl::AlreadyExistsError(
        absl::StrCat("session \"", AbslView(new_session_id), "\" already exists"));
  }

  const std::string source_prefix = SessionDataPrefix(tenant, source_session_id);
  const std::string new_prefix = SessionDataPrefix(tenant, new_session_id);
  rocksdb::WriteBatch batch;
  // Values are copied verbatim after they are decoded, so damage is reported at the source
  // rather than duplicated into the fork.
  auto copy_into = [&](rocksdb::ColumnFamilyHandle* family,
                       absl::FunctionRef<absl::Status(std::string_view)> verify) {
    return ScanPrefix(
        family, source_prefix, nullptr, [&](std::string_view key, std::string_view value) {
          if (absl::Status valid = verify(value); !valid.ok()) {
            return AtKey(valid, family->GetName(), key);
          }
          const std::string new_key_of_value =
              absl::StrCat(new_prefix, AbslView(key.substr(source_prefix.size())));
          batch.Put(family, new_key_of_value, rocksdb::Slice(value.data(), value.size()));
          return absl::OkStatus();
        });
  };
  absl::Status copied = copy_into(
      transcript_, [](std::string_view value) { return DecodeTurnValue(value).status(); });
  if (!copied.ok()) return copied;
  copied =
      copy_into(kv_, [](std::string_view value) { return DecodeKvSegmentValue(value).status(); });
  if (!copied.ok()) return copied;

  record->set_session_id(std::string(new_session_id));
  const int64_t now = absl::ToUnixMicros(absl::Now());
  record->set_create_time_micros(now);
  record->set_update_time_micros(now);
  batch.Put(sessions_, new_key, EncodeSessionValue(*record));
  if (absl::Status written =
          WriteSynced(batch, absl::StrCat("forking ", source_key, " to ", new_key));
      !written.ok()) {
    return written;
  }
  return record;
}

absl::Status RocksStore::CommitTurn(const TurnCommit& commit) {
  const std::string_view tenant = commit.session.tenant();
  const std::string_view session_id = commit.session.session_id();
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  const std::string key = SessionKey(tenant, session_id);
  SessionLocks::Guard guard = locks_.Lock(key);

  absl::StatusOr<SessionRecord> stored = ReadSession(tenant, session_id, nullptr);
  if (!stored.ok()) return stored.status();
  if (absl::Status follows = CheckTurnCommit(*stored, commit); !follows.ok()) return follows;

  rocksdb::WriteBatch batch;
  batch.Put(sessions_, key, EncodeSessionValue(commit.session));
  for (const TurnRecord& turn : commit.turns) {
    batch.Put(transcript_,
              SequencedKey(tenant, session_id, static_cast<uint64_t>(turn.turn_index())),
              EncodeTurnValue(turn));
  }
  for (uint64_t seq : commit.deleted_kv_segments) {
    batch.Delete(kv_, SequencedKey(tenant, session_id, seq));
  }
  for (const KvSegment& segment : commit.new_kv_segments) {
    batch.Put(kv_, SequencedKey(tenant, session_id, segment.seq),
              EncodeKvSegmentValue(segment.header, segment.payload));
  }
  return WriteSynced(batch, absl::StrCat("committing a turn of ", key));
}

absl::StatusOr<std::vector<TurnRecord>> RocksStore::LoadTranscript(
    std::string_view tenant, std::string_view session_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  rocksdb::ManagedSnapshot snapshot(db_.get());
  if (absl::Status exists = RequireSession(tenant, session_id, snapshot.snapshot()); !exists.ok()) {
    return exists;
  }
  const std::string prefix = SessionDataPrefix(tenant, session_id);
  std::vector<TurnRecord> turns;
  absl::Status scanned = ScanPrefix(
      transcript_, prefix, snapshot.snapshot(), [&](std::string_view key, std::string_view value) {
        absl::StatusOr<TurnRecord> turn = DecodeTurnValue(value);
        if (!turn.ok()) return AtKey(turn.status(), kTranscriptFamily, key);
        if (SequenceOf(key, prefix) != static_cast<uint64_t>(turn->turn_index())) {
          return AtKey(
              absl::DataLossError(absl::StrCat("record holds turn_index ", turn->turn_index())),
              kTranscriptFamily, key);
        }
        turns.push_back(*std::move(turn));
        return absl::OkStatus();
      });
  if (!scanned.ok()) return scanned;
  return turns;
}

absl::StatusOr<std::vector<KvSegment>> RocksStore::LoadKvSegments(
    std::string_view tenant, std::string_view session_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  rocksdb::ManagedSnapshot snapshot(db_.get());
  if (absl::Status exists = RequireSession(tenant, session_id, snapshot.snapshot()); !exists.ok()) {
    return exists;
  }
  const std::string prefix = SessionDataPrefix(tenant, session_id);
  std::vector<KvSegment> segments;
  absl::Status scanned = ScanPrefix(
      kv_, prefix, snapshot.snapshot(), [&](std::string_view key, std::string_view value) {
        const std::optional<uint64_t> seq = SequenceOf(key, prefix);
        if (!seq.has_value()) {
          return AtKey(absl::DataLossError("malformed key"), kKvFamily, key);
        }
        absl::StatusOr<DecodedKvSegment> decoded = DecodeKvSegmentValue(value);
        if (!decoded.ok()) return AtKey(decoded.status(), kKvFamily, key);
        segments.push_back(
            KvSegment{*seq, std::move(decoded->header), std::string(decoded->payload)});
        return absl::OkStatus();
      });
  if (!scanned.ok()) return scanned;
  return segments;
}

absl::StatusOr<SessionStorageStats> RocksStore::Stats(std::string_view tenant,
                                                      std::string_view session_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  rocksdb::ManagedSnapshot snapshot(db_.get());
  if (absl::Status exists = RequireSession(tenant, session_id, snapshot.snapshot()); !exists.ok()) {
    return exists;
  }
  const std::string prefix = SessionDataPrefix(tenant, session_id);
  SessionStorageStats stats;
  absl::Status scanned =
      ScanPrefix(kv_, prefix, snapshot.snapshot(), [&](std::string_view, std::string_view value) {
        ++stats.kv_segments;
        stats.kv_bytes += static_cast<int64_t>(value.size());
        return absl::OkStatus();
      });
  if (!scanned.ok()) return scanned;
  scanned = ScanPrefix(transcript_, prefix, snapshot.snapshot(),
                       [&](std::string_view, std::string_view value) {
                         ++stats.transcript_turns;
                         stats.transcript_bytes += static_cast<int64_t>(value.size());
                         return absl::OkStatus();
                       });
  if (!scanned.ok()) return scanned;
  return stats;
}

int64_t RocksStore::ApproximateDiskBytes() const {
  int64_t total = 0;
  for (rocksdb::ColumnFamilyHandle* family : handles_) {
    for (const std::string& property :
         {rocksdb::DB::Properties::kLiveSstFilesSize, rocksdb::DB::Properties::kSizeAllMemTables}) {
      uint64_t value = 0;
      if (db_->GetIntProperty(family, property, &value)) total += static_cast<int64_t>(value);
    }
  }
  return total;
}

absl::StatusOr<int64_t> RocksStore::CountSessions() const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), sessions_));
  int64_t count = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next())
    ++count;
  if (!it->status().ok()) return FromRocksStatus(it->status(), "counting sessions");
  return count;
}

absl::Status RocksStore::PutDocument(const DocumentRecord& record, std::string_view payload) {
  if (absl::Status ids = ValidateDocumentIds(record.tenant(), record.document_id()); !ids.ok()) {
    return ids;
  }
  const std::string key = SessionKey(record.tenant(), record.document_id());
  std::lock_guard lock(documents_mutex_);
  absl::StatusOr<std::optional<std::string>> existing = ReadValue(documents_, key, nullptr);
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) {
    return absl::AlreadyExistsError(absl::StrCat("document ", key, " exists"));
  }
  rocksdb::WriteBatch batch;
  const std::string value = EncodeDocumentValue(record, payload);
  batch.Put(documents_, key, value);
  return WriteSynced(batch, absl::StrCat("storing document ", key));
}

absl::StatusOr<StoredDocument> RocksStore::GetDocument(std::string_view tenant,
                                                       std::string_view document_id) const {
  if (absl::Status ids = ValidateDocumentIds(tenant, document_id); !ids.ok()) return ids;
  const std::string key = SessionKey(tenant, document_id);
  absl::StatusOr<std::optional<std::string>> value = ReadValue(documents_, key, nullptr);
  if (!value.ok()) return value.status();
  if (!value->has_value()) {
    return absl::NotFoundError(absl::StrCat("no document \"", AbslView(document_id), "\""));
  }
  absl::StatusOr<DecodedDocument> decoded = DecodeDocumentValue(**value);
  if (!decoded.ok()) return AtKey(decoded.status(), kDocumentsFamily, key);
  if (decoded->record.tenant() != tenant || decoded->record.document_id() != document_id) {
    return AtKey(absl::DataLossError("the record names another document"), kDocumentsFamily, key);
  }
  return StoredDocument{std::move(decoded->record), std::string(decoded->payload)};
}

}  // namespace gistmem::store
