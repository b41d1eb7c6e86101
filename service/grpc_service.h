// gistmem.v1.Gistmem on gRPC's callback API. Every method is registered raw (see
// service/grpc_codec.h); unary methods run their store work on the worker pool, turns go
// through the TurnExecutor, and errors leave as the absl status codes the layers below chose.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>

#include "gistmem/v1/gistmem.grpc.pb.h"
#include "service/auth.h"
#include "service/chat_reactor.h"
#include "service/document_service.h"
#include "service/runtime.h"
#include "service/session_manager.h"
#include "service/turn_executor.h"

namespace gistmem::service {

namespace internal {
using G = v1::Gistmem;
using RawGistmemService = G::WithRawCallbackMethod_CreateSession<
    G::WithRawCallbackMethod_GetSession<G::WithRawCallbackMethod_ListSessions<
        G::WithRawCallbackMethod_DeleteSession<G::WithRawCallbackMethod_ForkSession<
            G::WithRawCallbackMethod_GetSessionStats<G::WithRawCallbackMethod_Append<
                G::WithRawCallbackMethod_Generate<G::WithRawCallbackMethod_Chat<
                    G::WithRawCallbackMethod_PutDocument<G::WithRawCallbackMethod_GetDocument<
                        G::WithRawCallbackMethod_AttachDocument<G::Service>>>>>>>>>>>>;
}  // namespace internal

class GistmemService final : public internal::RawGistmemService {
 public:
  GistmemService(const ServiceRuntime& runtime, Auth& auth, SessionManager& sessions,
                 TurnExecutor& turns, DocumentService& documents);

  // Open Chat streams take no new turns and end (UNAVAILABLE) after their running turn; new
  // calls of every method are refused UNAVAILABLE. Called before grpc::Server::Shutdown, which
  // then waits for the rest.
  void BeginShutdown();

  using ByteBuffer = grpc::ByteBuffer;
  using Context = grpc::CallbackServerContext;
  grpc::ServerUnaryReactor* CreateSession(Context* context, const ByteBuffer* request,
                                          ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetSession(Context* context, const ByteBuffer* request,
                                       ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListSessions(Context* context, const ByteBuffer* request,
                                         ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteSession(Context* context, const ByteBuffer* request,
                                          ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ForkSession(Context* context, const ByteBuffer* request,
                                        ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetSessionStats(Context* context, const ByteBuffer* request,
                                            ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Append(Context* context, const ByteBuffer* request,
                                   ByteBuffer* response) override;
  grpc::ServerWriteReactor<ByteBuffer>* Generate(Context* context,
                                                 const ByteBuffer* request) override;
  grpc::ServerBidiReactor<ByteBuffer, ByteBuffer>* Chat(Context* context) override;
  grpc::ServerUnaryReactor* PutDocument(Context* context, const ByteBuffer* request,
                                        ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetDocument(Context* context, const ByteBuffer* request,
                                        ByteBuffer* response) override;
  grpc::ServerUnaryReactor* AttachDocument(Context* context, const ByteBuffer* request,
                                           ByteBuffer* response) override;

 private:
  // Admits the caller (service/auth.h), parses the request, runs `handler(tenant, request)`
  // (returning absl::StatusOr of the response message) on a worker and finishes the call with
  // its result.
  // The caller's tenant and the parsed request, or nothing when the call was refused (then
  // it is finished with the status that says why).
  // The caller's tenant (Auth::Admit), or UNAVAILABLE once shutting down.
  absl::StatusOr<std::string> Admit(const Context& context);
  template <typename Request>
  std::optional<std::pair<std::string, Request>> AdmitAndParse(Context* context,
                                                               const ByteBuffer* request,
                                                               grpc::ServerUnaryReactor* reactor);
  template <typename Request, typename Handler>
  grpc::ServerUnaryReactor* RunUnary(Context* context, const ByteBuffer* request,
                                     ByteBuffer* response, Handler handler);

  const ServiceRuntime& runtime_;
  Auth& auth_;
  SessionManager& sessions_;
  TurnExecutor& turns_;
  DocumentService& documents_;

  // Set by BeginShutdown: new calls are refused UNAVAILABLE while running turns drain.
  std::atomic<bool> refusing_{false};
  std::mutex chats_mutex_;
  std::unordered_set<ChatReactor*> chats_;
  bool shutting_down_ = false;
};

}  // namespace gistmem::service
