#include "service/call_observer.h"

#include <grpcpp/grpcpp.h>

#include <optional>
#include <random>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gistmem/v1/gistmem.pb.h"
#include "service/grpc_codec.h"
#include "service/logging.h"
#include "service/metrics.h"

namespace gistmem::service {
namespace {

using grpc::experimental::InterceptionHookPoints;

constexpr std::string_view kServicePrefix = "/gistmem.v1.Gistmem/";

// The session_id of a request of type Request, empty when it does not parse.
template <typename Request>
std::string SessionIdIn(const grpc::ByteBuffer& buffer) {
  absl::StatusOr<Request> request = ParseRequest<Request>(buffer);
  return request.ok() ? std::string(request->session_id()) : std::string();
}

// The session id a request names (empty when it names none, or does not parse).
std::string SessionIdOf(std::string_view method, const grpc::ByteBuffer& buffer) {
  if (method == "Chat") return SessionIdIn<v1::ChatRequest>(buffer);
  if (method == "Generate") return SessionIdIn<v1::GenerateRequest>(buffer);
  if (method == "Append") return SessionIdIn<v1::AppendRequest>(buffer);
  if (method == "CreateSession") return SessionIdIn<v1::CreateSessionRequest>(buffer);
  if (method == "GetSession") return SessionIdIn<v1::GetSessionRequest>(buffer);
  if (method == "DeleteSession") return SessionIdIn<v1::DeleteSessionRequest>(buffer);
  if (method == "ForkSession") return SessionIdIn<v1::ForkSessionRequest>(buffer);
  if (method == "GetSessionStats") return SessionIdIn<v1::GetSessionStatsRequest>(buffer);
  if (method == "AttachDocument") return SessionIdIn<v1::AttachDocumentRequest>(buffer);
  return {};
}

class CallObserver final : public grpc::experimental::Interceptor {
 public:
  CallObserver(grpc::experimental::ServerRpcInfo* info, const Auth& auth)
      : info_(info), auth_(auth), start_(absl::Now()) {
    std::string_view method = info->method();
    if (method.substr(0, kServicePrefix.size()) == kServicePrefix) {
      method.remove_prefix(kServicePrefix.size());
      ours_ = true;
    }
    method_ = std::string(method);
  }

  ~CallObserver() override {
    if (!status_) status_ = grpc::Status(grpc::StatusCode::CANCELLED, "the call ended early");
    const absl::Duration elapsed = absl::Now() - start_;
    metrics::ObserveGrpcCall(method_, status_->error_code(), elapsed);
    if (ours_ && status_->error_code() == grpc::StatusCode::OK && method_ == "AttachDocument") {
      metrics::CountDocumentAttach();
    }
    const bool failed = status_->error_code() != grpc::StatusCode::OK;
    // Health checks and reflection are logged at debug level only.
    const spdlog::level::level_enum level =
        !ours_ ? spdlog::level::debug : (failed ? spdlog::level::warn : spdlog::level::info);
    LogEvent(level, "call",
             {{"method", method_},
              {"code", std::string(metrics::GrpcCodeName(status_->error_code()))},
              {"tenant", tenant_},
              {"session_id", session_id_},
              {"request_id", request_id_},
              {"error", failed ? status_->error_message() : std::string()}},
             {{"duration_ms", absl::ToDoubleMilliseconds(elapsed)}});
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      const grpc::ServerContextBase& context = *info_->server_context();
      tenant_ = auth_.TenantOf(context);
      auto found = context.client_metadata().find("x-request-id");
      request_id_ = found != context.client_metadata().end()
                        ? std::string(found->second.data(), found->second.size())
                        : NewRequestId();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) && ours_ &&
        !seen_message_) {
      seen_message_ = true;
      if (const auto* buffer = static_cast<const grpc::ByteBuffer*>(methods->GetRecvMessage())) {
        session_id_ = SessionIdOf(method_, *buffer);
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      status_ = methods->GetSendStatus();
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  const Auth& auth_;
  const absl::Time start_;
  std::string method_;
  bool ours_ = false;
  bool seen_message_ = false;
  std::string tenant_, request_id_, session_id_;
  std::optional<grpc::Status> status_;
};

class CallObserverFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallObserverFactory(const Auth& auth) : auth_(auth) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallObserver(info, auth_);
  }

 private:
  const Auth& auth_;
};

}  // namespace

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> CallObservers(
    const Auth& auth) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<CallObserverFactory>(auth));
  return factories;
}

std::string NewRequestId() {
  thread_local std::mt19937_64 random{std::random_device{}()};
  return absl::StrFormat("%016x", random());
}

}  // namespace gistmem::service
