#include "service/grpc_service.h"

#include <memory>
#include <utility>

#include "service/generate_reactor.h"
#include "service/grpc_codec.h"
#include "service/session_proto.h"

namespace gistmem::service {
namespace {

// Append's reply: the usage once the message is durable.
class AppendObserver final : public TurnObserver {
 public:
  AppendObserver(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
                 grpc::ByteBuffer* response)
      : context_(context), reactor_(reactor), response_(response) {}

  void OnStart(const std::string&, int64_t) override {}
  void OnDelta(std::string, std::vector<int32_t>) override {}
  void OnEnd(const absl::Status& status, const TurnOutcome& outcome) override {
    if (!status.ok()) return reactor_->Finish(ToGrpcStatus(status));
    if (outcome.finish_reason == v1::FINISH_REASON_CANCELLED) {
      return reactor_->Finish(CancelledStatus(*context_));
    }
    v1::AppendResponse response;
    *response.mutable_usage() = outcome.usage;
    *response_ = SerializeMessage(response);
    reactor_->Finish(grpc::Status::OK);
  }

 private:
  grpc::CallbackServerContext* context_;
  grpc::ServerUnaryReactor* reactor_;
  grpc::ByteBuffer* response_;
};

}  // namespace

GistmemService::GistmemService(const ServiceRuntime& runtime, Auth& auth, SessionManager& sessions,
                               TurnExecutor& turns, DocumentService& documents)
    : runtime_(runtime), auth_(auth), sessions_(sessions), turns_(turns), documents_(documents) {}

template <typename Request>
std::optional<std::pair<std::string, Request>> GistmemService::AdmitAndParse(
    Context* context, const ByteBuffer* request, grpc::ServerUnaryReactor* reactor) {
  absl::StatusOr<std::string> tenant = Admit(*context);
  if (!tenant.ok()) {
    reactor->Finish(ToGrpcStatus(tenant.status()));
    return std::nullopt;
  }
  absl::StatusOr<Request> parsed = ParseRequest<Request>(*request);
  if (!parsed.ok()) {
    reactor->Finish(ToGrpcStatus(parsed.status()));
    return std::nullopt;
  }
  return std::make_pair(*std::move(tenant), *std::move(parsed));
}

namespace {

// Finishes a unary call with `result` (a message or the status that says why not).
template <typename Message>
void FinishUnary(grpc::ServerUnaryReactor* reactor, grpc::ByteBuffer* response,
                 const absl::StatusOr<Message>& result) {
  if (!result.ok()) return reactor->Finish(ToGrpcStatus(result.status()));
  *response = SerializeMessage(*result);
  reactor->Finish(grpc::Status::OK);
}

}  // namespace

grpc::ServerUnaryReactor* GistmemService::PutDocument(Context* context, const ByteBuffer* request,
                                                      ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto admitted = AdmitAndParse<v1::PutDocumentRequest>(context, request, reactor);
  if (!admitted) return reactor;
  auto& [tenant, parsed] = *admitted;
  runtime_.workers.Post(
      [this, context, reactor, response, put = std::move(parsed), tenant = std::move(tenant)] {
        documents_.Put(
            tenant, put, [context] { return context->IsCancelled(); },
            [reactor, response](absl::StatusOr<v1::Document> result) {
              FinishUnary(reactor, response, result);
            });
      });
  return reactor;
}

grpc::ServerUnaryReactor* GistmemService::GetDocument(Context* context, const ByteBuffer* request,
                                                      ByteBuffer* response) {
  return RunUnary<v1::GetDocumentRequest>(
      context, request, response,
      [this](const std::string& tenant, const v1::GetDocumentRequest& get)
          -> absl::StatusOr<v1::Document> { return documents_.Get(tenant, get.document_id()); });
}

grpc::ServerUnaryReactor* GistmemService::AttachDocument(Context* context,
                                                         const ByteBuffer* request,
                                                         ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto admitted = AdmitAndParse<v1::AttachDocumentRequest>(context, request, reactor);
  if (!admitted) return reactor;
  auto& [tenant, parsed] = *admitted;
  documents_.Attach(tenant, parsed,
                    [reactor, response](absl::StatusOr<v1::AttachDocumentResponse> r) {
                      FinishUnary(reactor, response, r);
                    });
  return reactor;
}

template <typename Request, typename Handler>
grpc::ServerUnaryReactor* GistmemService::RunUnary(Context* context, const ByteBuffer* request,
                                                   ByteBuffer* response, Handler handler) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto admitted = AdmitAndParse<Request>(context, request, reactor);
  if (!admitted) return reactor;
  auto& [tenant, parsed] = *admitted;
  runtime_.workers.Post([reactor, response, handler = std::move(handler),
                         parsed = std::move(parsed), tenant = std::move(tenant)] {
    auto result = handler(tenant, parsed);
    if (!result.ok()) return reactor->Finish(ToGrpcStatus(result.status()));
    *response = SerializeMessage(*result);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* GistmemService::CreateSession(Context* context, const ByteBuffer* request,
                                                        ByteBuffer* response) {
  return RunUnary<v1::CreateSessionRequest>(
      context, request, response,
      [this](const std::string& tenant,
             const v1::CreateSessionRequest& create) -> absl::StatusOr<v1::Session> {
        absl::StatusOr<store::SessionRecord> record = sessions_.Create(tenant, create);
        if (!record.ok()) return record.status();
        return ToSessionProto(*record);
      });
}

grpc::ServerUnaryReactor* GistmemService::GetSession(Context* context, const ByteBuffer* request,
                                                     ByteBuffer* response) {
  return RunUnary<v1::GetSessionRequest>(
      context, request, response,
      [this](const std::string& tenant,
             const v1::GetSessionRequest& get) -> absl::StatusOr<v1::Session> {
        absl::StatusOr<store::SessionRecord> record = sessions_.Get(tenant, get.session_id());
        if (!record.ok()) return record.status();
        return ToSessionProto(*record);
      });
}

grpc::ServerUnaryReactor* GistmemService::ListSessions(Context* context, const ByteBuffer* request,
                                                       ByteBuffer* response) {
  return RunUnary<v1::ListSessionsRequest>(
      context, request, response,
      [this](const std::string& tenant,
             const v1::ListSessionsRequest& list) -> absl::StatusOr<v1::ListSessionsResponse> {
        absl::StatusOr<store::SessionPage> page =
            sessions_.List(tenant, list.page_size(), list.page_token());
        if (!page.ok()) return page.status();
        v1::ListSessionsResponse result;
        for (const store::SessionRecord& record : page->sessions) {
          *result.add_sessions() = ToSessionProto(record);
        }
        result.set_next_page_token(page->next_page_token);
        return result;
      });
}

grpc::ServerUnaryReactor* GistmemService::DeleteSession(Context* context, const ByteBuffer* request,
                                                        ByteBuffer* response) {
  return RunUnary<v1::DeleteSessionRequest>(
      context, request, response,
      [this](const std::string& tenant,
             const v1::DeleteSessionRequest& del) -> absl::StatusOr<v1::DeleteSessionResponse> {
        if (absl::Status deleted = sessions_.Delete(tenant, del.session_id()); !deleted.ok()) {
          return deleted;
        }
        return v1::DeleteSessionResponse();
      });
}

grpc::ServerUnaryReactor* GistmemService::ForkSession(Context* context, const ByteBuffer* request,
                                                      ByteBuffer* response) {
  return RunUnary<v1::ForkSessionRequest>(
      context, request, response,
      [this](const std::string& tenant,
             const v1::ForkSessionRequest& fork) -> absl::StatusOr<v1::Session> {
        absl::StatusOr<store::SessionRecord> record =
            sessions_.Fork(tenant, fork.session_id(), fork.new_session_id());
        if (!record.ok()) return record.status();
        return ToSessionProto(*record);
      });
}

grpc::ServerUnaryReactor* GistmemService::GetSessionStats(Context* context,
                                                          const ByteBuffer* request,
                                                          ByteBuffer* response) {
  return RunUnary<v1::GetSessionStatsRequest>(
      context, request, response,
      [this](const std::string& tenant,
             const v1::GetSessionStatsRequest& get) -> absl::StatusOr<v1::SessionStats> {
        return sessions_.Stats(tenant, get.session_id());
      });
}

grpc::ServerUnaryReactor* GistmemService::Append(Context* context, const ByteBuffer* request,
                                                 ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto admitted = AdmitAndParse<v1::AppendRequest>(context, request, reactor);
  if (!admitted) return reactor;
  auto& [tenant, parsed] = *admitted;
  TurnRequest turn;
  turn.kind = TurnRequest::Kind::kAppend;
  turn.tenant = std::move(tenant);
  turn.session_id = parsed.session_id();
  turn.role = parsed.message().role();
  turn.content = parsed.message().content();
  turn.is_cancelled = [context] { return context->IsCancelled(); };
  turns_.Submit(std::move(turn), std::make_shared<AppendObserver>(context, reactor, response));
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* GistmemService::Generate(Context* context,
                                                                     const ByteBuffer* request) {
  return new GenerateReactor(context, request, Admit(*context), turns_);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* GistmemService::Chat(
    Context* context) {
  auto* reactor = new ChatReactor(context, Admit(*context), turns_, [this](ChatReactor* done) {
    std::lock_guard lock(chats_mutex_);
    chats_.erase(done);
  });
  bool refuse = false;
  {
    std::lock_guard lock(chats_mutex_);
    chats_.insert(reactor);
    refuse = shutting_down_;
  }
  if (refuse) reactor->Shutdown();
  return reactor;
}

absl::StatusOr<std::string> GistmemService::Admit(const Context& context) {
  if (refusing_.load()) return absl::UnavailableError("the server is shutting down");
  return auth_.Admit(context);
}

void GistmemService::BeginShutdown() {
  refusing_ = true;
  // Reactors leave the set in OnDone, which gRPC runs on its own threads (never inline in
  // Finish for application reactors), so calling into them under the lock keeps them alive.
  std::lock_guard lock(chats_mutex_);
  shutting_down_ = true;
  for (ChatReactor* chat : chats_)
    chat->Shutdown();
}

}  // namespace gistmem::service
