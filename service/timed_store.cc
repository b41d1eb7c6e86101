#include "service/timed_store.h"

#include <utility>

#include "absl/time/clock.h"
#include "service/metrics.h"

namespace gistmem::service {
namespace {

template <typename Call>
auto Read(std::string_view op, Call call) {
  const absl::Time start = absl::Now();
  auto result = call();
  metrics::ObserveStoreRead(op, absl::Now() - start);
  return result;
}
template <typename Call>
auto Write(std::string_view op, Call call) {
  const absl::Time start = absl::Now();
  auto result = call();
  metrics::ObserveStoreWrite(op, absl::Now() - start);
  return result;
}

class TimedStore final : public store::Store {
 public:
  explicit TimedStore(std::unique_ptr<store::Store> inner) : inner_(std::move(inner)) {}

  absl::Status CreateSession(const store::SessionRecord& record) override {
    return Write("CreateSession", [&] { return inner_->CreateSession(record); });
  }
  absl::StatusOr<store::SessionRecord> GetSession(std::string_view tenant,
                                                  std::string_view session_id) const override {
    return Read("GetSession", [&] { return inner_->GetSession(tenant, session_id); });
  }
  absl::StatusOr<store::SessionPage> ListSessions(std::string_view tenant, int page_size,
                                                  std::string_view page_token) const override {
    return Read("ListSessions",
                [&] { return inner_->ListSessions(tenant, page_size, page_token); });
  }
  absl::Status DeleteSession(std::string_view tenant, std::string_view session_id) override {
    return Write("DeleteSession", [&] { return inner_->DeleteSession(tenant, session_id); });
  }
  absl::StatusOr<store::SessionRecord> ForkSession(std::string_view tenant,
                                                   std::string_view source_session_id,
                                                   std::string_view new_session_id) override {
    return Write("ForkSession",
                 [&] { return inner_->ForkSession(tenant, source_session_id, new_session_id); });
  }
  absl::Status CommitTurn(const store::TurnCommit& commit) override {
    return Write("CommitTurn", [&] { return inner_->CommitTurn(commit); });
  }
  absl::StatusOr<std::vector<store::TurnRecord>> LoadTranscript(
      std::string_view tenant, std::string_view session_id) const override {
    return Read("LoadTranscript", [&] { return inner_->LoadTranscript(tenant, session_id); });
  }
  absl::StatusOr<std::vector<store::KvSegment>> LoadKvSegments(
      std::string_view tenant, std::string_view session_id) const override {
    return Read("LoadKvSegments", [&] { return inner_->LoadKvSegments(tenant, session_id); });
  }
  absl::StatusOr<store::SessionStorageStats> Stats(std::string_view tenant,
                                                   std::string_view session_id) const override {
    return Read("Stats", [&] { return inner_->Stats(tenant, session_id); });
  }
  absl::StatusOr<int64_t> CountSessions() const override {
    return Read("CountSessions", [&] { return inner_->CountSessions(); });
  }
  absl::Status PutDocument(const store::DocumentRecord& record, std::string_view payload) override {
    return Write("PutDocument", [&] { return inner_->PutDocument(record, payload); });
  }
  absl::StatusOr<store::StoredDocument> GetDocument(std::string_view tenant,
                                                    std::string_view document_id) const override {
    return Read("GetDocument", [&] { return inner_->GetDocument(tenant, document_id); });
  }
  int64_t ApproximateDiskBytes() const override { return inner_->ApproximateDiskBytes(); }
  bool shared() const override { return inner_->shared(); }
  absl::StatusOr<uint64_t> AcquireSession(std::string_view tenant,
                                          std::string_view session_id) override {
    return Write("AcquireSession", [&] { return inner_->AcquireSession(tenant, session_id); });
  }
  absl::StatusOr<uint64_t> SessionEpoch(std::string_view tenant,
                                        std::string_view session_id) const override {
    return Read("SessionEpoch", [&] { return inner_->SessionEpoch(tenant, session_id); });
  }

 private:
  std::unique_ptr<store::Store> inner_;
};

}  // namespace

std::unique_ptr<store::Store> TimeStoreCalls(std::unique_ptr<store::Store> store) {
  return std::make_unique<TimedStore>(std::move(store));
}

}  // namespace gistmem::service
