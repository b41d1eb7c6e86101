// PutDocument, GetDocument and AttachDocument: a document is read once under a memory policy
// (through the scheduler, like a turn of a session of its own), what its last token could see
// is stored content-addressed and kept in one shared copy (DocumentRegistry), and attaching
// it to a session appends it to the session's memory with no computation.
#pragma once

#include <functional>
#include <string_view>

#include "absl/status/statusor.h"
#include "gistmem/v1/gistmem.pb.h"
#include "service/document_registry.h"
#include "service/runtime.h"
#include "service/session_manager.h"

namespace gistmem::service {

class DocumentService {
 public:
  DocumentService(const ServiceRuntime& runtime, SessionManager& sessions);

  template <typename T>
  using Done = std::function<void(absl::StatusOr<T>)>;

  // `done` runs once, on a worker or the scheduler's thread.
  // A tenant's documents are its own: another tenant can neither read nor attach them.
  void Put(const std::string& tenant, const v1::PutDocumentRequest& request,
           std::function<bool()> is_cancelled, Done<v1::Document> done);
  absl::StatusOr<v1::Document> Get(const std::string& tenant, std::string_view document_id);
  void Attach(const std::string& tenant, const v1::AttachDocumentRequest& request,
              Done<v1::AttachDocumentResponse> done);

 private:
  v1::Document ToProto(const store::DocumentRecord& record, const memory::FrozenKv& entries,
                       bool created) const;

  const ServiceRuntime& runtime_;
  SessionManager& sessions_;
};

}  // namespace gistmem::service
