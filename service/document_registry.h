// Shared documents in memory: one read-only copy per document while any session (or the
// registry's small keep-alive list) holds it, loaded from the store on first use. Sessions
// that attach the same document hold the same copy.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "memory/block_pool.h"
#include "memory/session_kv.h"
#include "model/config.h"
#include "store/store.h"

namespace gistmem::service {

struct LoadedDocument {
  store::DocumentRecord record;  // without token ids
  std::shared_ptr<const memory::FrozenKv> entries;
};

class DocumentRegistry {
 public:
  // Documents' pages come from `pool` (the engine's).
  DocumentRegistry(const model::ModelConfig& config, const std::string& model_fingerprint,
                   store::Store& store, memory::BlockPool& pool, int keep_alive = 16);

  // The document, from memory or the store: NOT_FOUND, FAILED_PRECONDITION (made for another
  // model), DATA_LOSS, RESOURCE_EXHAUSTED (no room in the KV pool).
  absl::StatusOr<LoadedDocument> Load(std::string_view tenant, std::string_view document_id);
  // A document just computed, so the next Load needs no store read.
  void Insert(std::string_view tenant, LoadedDocument document);

  // Documents in memory and the bytes of their one copy each.
  int64_t documents_in_memory() const;
  int64_t bytes_in_memory() const;

 private:
  struct Entry {
    store::DocumentRecord record;
    std::weak_ptr<const memory::FrozenKv> entries;
  };
  void KeepAliveLocked(std::shared_ptr<const memory::FrozenKv> entries);

  const model::ModelConfig& config_;
  const std::string& model_fingerprint_;
  store::Store& store_;
  memory::BlockPool& pool_;
  const size_t keep_alive_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> documents_;  // "<tenant>/<id>"
  std::deque<std::shared_ptr<const memory::FrozenKv>> recent_;
};

}  // namespace gistmem::service
