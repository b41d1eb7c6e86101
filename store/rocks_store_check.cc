// RocksStore's maintenance: CheckAll, DeleteDocument, ReadRemains (store/rocks_store.h).
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "store/absl_view.h"
#include "store/keys.h"
#include "store/records.h"
#include "store/rocks_status.h"
#include "store/rocks_store.h"

namespace gistmem::store {
namespace {

using Name = std::pair<std::string, std::string>;  // tenant, id

// "<tenant>/<id>[/...]" -> (tenant, id); nothing for other keys (the format marker).
std::optional<Name> NameOf(std::string_view key) {
  const size_t first = key.find(kKeySeparator);
  if (first == std::string_view::npos || first == 0) return std::nullopt;
  const size_t second = key.find(kKeySeparator, first + 1);
  const std::string_view id = key.substr(
      first + 1, second == std::string_view::npos ? std::string_view::npos : second - first - 1);
  if (id.empty()) return std::nullopt;
  return Name{std::string(key.substr(0, first)), std::string(id)};
}

// Every (tenant, id) named by a key of `family`: a full scan, then one scan per table file
// from its smallest key, so that a corrupt block hides as few keys as possible; the table
// files' smallest and largest keys are names too.
void CollectNames(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* family, std::set<Name>& names,
                  std::vector<std::string>& errors) {
  rocksdb::ReadOptions read;
  read.verify_checksums = true;
  auto scan_from = [&](const std::optional<std::string>& start,
                       const std::optional<std::string>& last) {
    std::unique_ptr<rocksdb::Iterator> it(db.NewIterator(read, family));
    if (start) {
      it->Seek(*start);
    } else {
      it->SeekToFirst();
    }
    for (; it->Valid(); it->Next()) {
      if (last && it->key().compare(*last) > 0) break;
      if (std::optional<Name> name = NameOf(std::string_view(it->key().data(), it->key().size())))
        names.insert(*std::move(name));
    }
    if (!it->status().ok()) {
      errors.push_back(absl::StrCat(family->GetName(), ": ", it->status().ToString()));
    }
  };
  scan_from(std::nullopt, std::nullopt);
  std::vector<rocksdb::LiveFileMetaData> files;
  db.GetLiveFilesMetaData(&files);
  for (const rocksdb::LiveFileMetaData& file : files) {
    if (file.column_family_name != family->GetName()) continue;
    for (const std::string& key : {file.smallestkey, file.largestkey}) {
      if (std::optional<Name> name = NameOf(key)) names.insert(*std::move(name));
    }
    scan_from(file.smallestkey, file.largestkey);
  }
}

}  // namespace

StoreCheckReport RocksStore::CheckAll() const {
  StoreCheckReport report;
  std::set<Name> sessions, documents;
  for (rocksdb::ColumnFamilyHandle* family : {sessions_, transcript_, kv_}) {
    CollectNames(*db_, family, sessions, report.scan_errors);
  }
  CollectNames(*db_, documents_, documents, report.scan_errors);
  // Errors repeat when several scans meet the same block.
  std::sort(report.scan_errors.begin(), report.scan_errors.end());
  report.scan_errors.erase(std::unique(report.scan_errors.begin(), report.scan_errors.end()),
                           report.scan_errors.end());

  for (const auto& [tenant, id] : sessions) {
    absl::Status status = GetSession(tenant, id).status();
    if (status.code() == absl::StatusCode::kNotFound) {
      // Table files' key ranges also name deleted sessions (and range-deletion ends): only
      // live transcript or KV data without a record is damage.
      status = LiveDataUnder(tenant, id);
      if (status.code() == absl::StatusCode::kNotFound) continue;
      if (status.ok()) {
        status = absl::DataLossError(absl::StrCat("sessions: no record for \"", tenant, "/", id,
                                                  "\", but transcript or KV data under it"));
      }
    }
    ++report.sessions_checked;
    if (status.ok()) status = LoadTranscript(tenant, id).status();
    if (status.ok()) status = LoadKvSegments(tenant, id).status();
    if (!status.ok()) report.damaged.push_back({"session", tenant, id, status});
  }
  for (const auto& [tenant, id] : documents) {
    absl::Status status = GetDocument(tenant, id).status();
    if (status.code() == absl::StatusCode::kNotFound) continue;  // a key range's end only
    ++report.documents_checked;
    if (!status.ok()) report.damaged.push_back({"document", tenant, id, status});
  }
  return report;
}

absl::Status RocksStore::LiveDataUnder(std::string_view tenant, std::string_view session_id) const {
  rocksdb::ReadOptions read;
  read.verify_checksums = true;
  const std::string prefix = SessionDataPrefix(tenant, session_id);
  for (rocksdb::ColumnFamilyHandle* family : {transcript_, kv_}) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read, family));
    it->Seek(prefix);
    if (!it->status().ok()) {
      return FromRocksStatus(it->status(), absl::StrCat(family->GetName(), " under ", prefix));
    }
    if (it->Valid() && it->key().starts_with(prefix)) return absl::OkStatus();
  }
  return absl::NotFoundError("no data");
}

absl::Status RocksStore::DeleteDocument(std::string_view tenant, std::string_view document_id) {
  rocksdb::WriteBatch batch;
  batch.Delete(documents_, SessionKey(tenant, document_id));
  std::lock_guard lock(documents_mutex_);
  return WriteSynced(
      batch, absl::StrCat("deleting document ", AbslView(tenant), "/", AbslView(document_id)));
}

SessionRemains RocksStore::ReadRemains(std::string_view tenant, std::string_view session_id) const {
  SessionRemains remains;
  const std::string key = SessionKey(tenant, session_id);
  absl::StatusOr<SessionRecord> session = GetSession(tenant, session_id);
  if (session.ok()) {
    remains.session = *std::move(session);
  } else if (session.status().code() != absl::StatusCode::kNotFound) {
    remains.unreadable.push_back(PrintableKey(key));
  }
  rocksdb::ReadOptions read;
  read.verify_checksums = true;
  const std::string prefix = SessionDataPrefix(tenant, session_id);
  const std::string end = PrefixEnd(prefix);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read, transcript_));
  for (it->Seek(prefix); it->Valid() && it->key().compare(end) < 0; it->Next()) {
    const std::string_view turn_key(it->key().data(), it->key().size());
    absl::StatusOr<TurnRecord> turn =
        DecodeTurnValue(std::string_view(it->value().data(), it->value().size()));
    if (turn.ok()) {
      remains.turns.push_back(*std::move(turn));
    } else {
      remains.unreadable.push_back(PrintableKey(turn_key));
    }
  }
  if (!it->status().ok()) {
    remains.unreadable.push_back(
        absl::StrCat(PrintableKey(prefix), "...: ", it->status().ToString()));
  }
  return remains;
}

}  // namespace gistmem::store
