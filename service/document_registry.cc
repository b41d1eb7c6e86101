#include "service/document_registry.h"

#include "absl/strings/str_cat.h"
#include "service/kv_segment.h"

namespace gistmem::service {
namespace {

std::string KeyOf(std::string_view tenant, std::string_view id) {
  return absl::StrCat(std::string(tenant), "/", std::string(id));
}

}  // namespace

DocumentRegistry::DocumentRegistry(const model::ModelConfig& config,
                                   const std::string& model_fingerprint, store::Store& store,
                                   memory::BlockPool& pool, int keep_alive)
    : config_(config),
      model_fingerprint_(model_fingerprint),
      store_(store),
      pool_(pool),
      keep_alive_(static_cast<size_t>(keep_alive)) {}

void DocumentRegistry::KeepAliveLocked(std::shared_ptr<const memory::FrozenKv> entries) {
  recent_.push_back(std::move(entries));
  while (recent_.size() > keep_alive_)
    recent_.pop_front();
}

absl::StatusOr<LoadedDocument> DocumentRegistry::Load(std::string_view tenant,
                                                      std::string_view document_id) {
  const std::string key = KeyOf(tenant, document_id);
  {
    std::lock_guard lock(mutex_);
    if (auto found = documents_.find(key); found != documents_.end()) {
      if (auto entries = found->second.entries.lock()) {
        return LoadedDocument{found->second.record, std::move(entries)};
      }
    }
  }
  absl::StatusOr<store::StoredDocument> stored = store_.GetDocument(tenant, document_id);
  if (!stored.ok()) return stored.status();
  absl::StatusOr<std::shared_ptr<const memory::FrozenKv>> entries =
      DecodeDocumentEntries(config_, stored->record.segment(), stored->payload, model_fingerprint_,
                            pool_, stored->record.stream_tokens());
  if (!entries.ok()) {
    return absl::Status(entries.status().code(), absl::StrCat("document ", std::string(document_id),
                                                              ": ", entries.status().message()));
  }
  LoadedDocument loaded{std::move(stored->record), *std::move(entries)};
  loaded.record.clear_token_ids();
  std::lock_guard lock(mutex_);
  Entry& entry = documents_[key];
  if (auto existing = entry.entries.lock()) {  // another thread loaded it meanwhile
    return LoadedDocument{entry.record, std::move(existing)};
  }
  entry = {loaded.record, loaded.entries};
  KeepAliveLocked(loaded.entries);
  return loaded;
}

void DocumentRegistry::Insert(std::string_view tenant, LoadedDocument document) {
  document.record.clear_token_ids();
  std::lock_guard lock(mutex_);
  Entry& entry = documents_[KeyOf(tenant, document.record.document_id())];
  if (entry.entries.lock()) return;
  entry = {document.record, document.entries};
  KeepAliveLocked(std::move(document.entries));
}

int64_t DocumentRegistry::documents_in_memory() const {
  std::lock_guard lock(mutex_);
  int64_t count = 0;
  for (const auto& [key, entry] : documents_)
    count += entry.entries.expired() ? 0 : 1;
  return count;
}

int64_t DocumentRegistry::bytes_in_memory() const {
  std::lock_guard lock(mutex_);
  int64_t bytes = 0;
  for (const auto& [key, entry] : documents_) {
    if (auto entries = entry.entries.lock()) {
      bytes += entries->bytes();
    }
  }
  return bytes;
}

}  // namespace gistmem::service
