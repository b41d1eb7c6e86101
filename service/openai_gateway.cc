#include "service/openai_gateway.h"

#include <httplib.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gistmem/v1/gistmem.grpc.pb.h"
#include "service/call_observer.h"
#include "service/http_listener.h"
#include "service/logging.h"
#include "service/metrics.h"
#include "service/openai_protocol.h"

namespace gistmem::service {
namespace {

constexpr char kSessionHeader[] = "x-gistmem-session";

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// What one HTTP request carries through its gRPC calls.
struct Call {
  std::string tenant;
  std::string request_id;
  std::string gateway_secret;
  std::unique_ptr<v1::Gistmem::Stub> stub;

  // A fresh context for one gRPC call, with the tenant, the secret and the request id.
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->AddMetadata(std::string(kGatewaySecretHeader), gateway_secret);
    context->AddMetadata(std::string(kGatewayTenantHeader), tenant);
    context->AddMetadata("x-request-id", request_id);
    return context;
  }
};

// Creates the session (with the request's system prompt) and appends the request's earlier
// messages. Returns its id.
absl::StatusOr<std::string> CreateWithHistory(const Call& call,
                                              const openai::ChatCompletionRequest& request,
                                              const std::string& session_id) {
  v1::CreateSessionRequest create;
  create.set_session_id(session_id);
  create.set_system_prompt(openai::SystemPromptOf(request));
  v1::Session session;
  if (grpc::Status created = call.stub->CreateSession(call.Context().get(), create, &session);
      !created.ok()) {
    return FromGrpc(created);
  }
  for (const openai::ChatMessage& message : openai::HistoryOf(request)) {
    v1::AppendRequest append;
    append.set_session_id(session.session_id());
    append.mutable_message()->set_role(message.role);
    append.mutable_message()->set_content(message.content);
    v1::AppendResponse appended;
    if (grpc::Status status = call.stub->Append(call.Context().get(), append, &appended);
        !status.ok()) {
      return FromGrpc(status);
    }
  }
  return session.session_id();
}

// The session the turn runs in: the named one (created with the request's history when it
// does not exist yet), or a new one-off session.
absl::StatusOr<std::string> PrepareSession(const Call& call,
                                           const openai::ChatCompletionRequest& request,
                                           const std::string& session_id) {
  if (session_id.empty()) return CreateWithHistory(call, request, "");
  v1::GetSessionRequest get;
  get.set_session_id(session_id);
  v1::Session session;
  grpc::Status found = call.stub->GetSession(call.Context().get(), get, &session);
  if (found.ok()) return session.session_id();
  if (found.error_code() != grpc::StatusCode::NOT_FOUND) return FromGrpc(found);
  absl::StatusOr<std::string> created = CreateWithHistory(call, request, session_id);
  // Another request created it meanwhile: use it as it stands.
  if (created.status().code() == absl::StatusCode::kAlreadyExists) return session_id;
  return created;
}

void DeleteSession(const Call& call, const std::string& session_id) {
  v1::DeleteSessionRequest del;
  del.set_session_id(session_id);
  v1::DeleteSessionResponse deleted;
  grpc::Status status = call.stub->DeleteSession(call.Context().get(), del, &deleted);
  if (!status.ok()) {
    spdlog::warn("one-off session {} not deleted: {}", session_id, status.error_message());
  }
}

void SendError(httplib::Response& response, const absl::Status& status) {
  response.status = openai::HttpStatusOf(status.code());
  response.set_content(openai::ErrorJson(status), "application/json");
}

int64_t UnixSeconds() {
  return absl::ToUnixSeconds(absl::Now());
}

// A Generate call in progress: its context, its reader and what it produced so far.
struct Turn {
  Call call;
  std::string session_id;
  bool one_off = false;
  std::string model;
  std::string completion_id;
  int64_t created = 0;
  bool include_usage = false;
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReader<v1::ChatEvent>> reader;
  bool finished = false;  // reader->Finish was called
  absl::Time start;

  ~Turn() {
    if (reader && !finished) {
      context->TryCancel();
      v1::ChatEvent event;
      while (reader->Read(&event)) {
      }
      reader->Finish();
    }
    if (one_off && !session_id.empty()) DeleteSession(call, session_id);
  }
  grpc::Status Finish() {
    finished = true;
    return reader->Finish();
  }
};

void LogRequest(const httplib::Request& request, int status, absl::Time start,
                const std::string& tenant, const std::string& request_id,
                const std::string& session_id) {
  const std::string route = request.path;
  metrics::ObserveHttpRequest(route, status, absl::Now() - start);
  LogEvent(status >= 400 ? spdlog::level::warn : spdlog::level::info, "http",
           {{"method", request.method},
            {"route", route},
            {"tenant", tenant},
            {"session_id", session_id},
            {"request_id", request_id}},
           {{"status", static_cast<double>(status)},
            {"duration_ms", absl::ToDoubleMilliseconds(absl::Now() - start)}});
}

}  // namespace

OpenAiGateway::OpenAiGateway(const GatewayOptions& options, Auth& auth,
                             std::shared_ptr<grpc::Channel> channel)
    : options_(options),
      auth_(auth),
      channel_(std::move(channel)),
      http_(std::make_unique<httplib::Server>()) {}

absl::StatusOr<std::unique_ptr<OpenAiGateway>> OpenAiGateway::Start(
    const GatewayOptions& options, Auth& auth, std::shared_ptr<grpc::Channel> channel) {
  std::unique_ptr<OpenAiGateway> gateway(new OpenAiGateway(options, auth, std::move(channel)));
  gateway->Route();
  absl::StatusOr<int> port =
      BindAndServe(*gateway->http_, options.listen_address, "http_listen", &gateway->listener_);
  if (!port.ok()) return port.status();
  gateway->port_ = *port;
  return gateway;
}

OpenAiGateway::~OpenAiGateway() {
  Stop();
}

void OpenAiGateway::StopAccepting() {
  if (http_) http_->stop();
}

void OpenAiGateway::Stop() {
  StopAccepting();
  if (listener_.joinable()) listener_.join();
}

void OpenAiGateway::Route() {
  http_->Get("/v1/models", [this](const httplib::Request& request, httplib::Response& response) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::string> tenant = auth_.AdmitHeaders(
        request.get_header_value("x-api-key"), request.get_header_value("authorization"));
    if (!tenant.ok()) {
      SendError(response, tenant.status());
    } else {
      response.set_content(openai::ModelsJson(options_.model_id, UnixSeconds()),
                           "application/json");
    }
    LogRequest(request, response.status < 0 ? 200 : response.status, start,
               tenant.ok() ? *tenant : std::string(), "", "");
  });

  http_->Post("/v1/chat/completions", [this](const httplib::Request& request,
                                             httplib::Response& response) {
    const absl::Time start = absl::Now();
    const std::string request_id = request.has_header("x-request-id")
                                       ? request.get_header_value("x-request-id")
                                       : NewRequestId();
    response.set_header("x-request-id", request_id);
    auto fail = [&](const absl::Status& status, const std::string& tenant,
                    const std::string& session) {
      SendError(response, status);
      LogRequest(request, response.status, start, tenant, request_id, session);
    };
    absl::StatusOr<std::string> tenant = auth_.AdmitHeaders(
        request.get_header_value("x-api-key"), request.get_header_value("authorization"));
    if (!tenant.ok()) return fail(tenant.status(), "", "");
    absl::StatusOr<openai::ChatCompletionRequest> parsed =
        openai::ParseChatCompletionRequest(request.body);
    if (!parsed.ok()) return fail(parsed.status(), *tenant, "");
    if (parsed->model != options_.model_id && parsed->model != options_.model_fingerprint &&
        parsed->model != "gistmem") {
      return fail(absl::NotFoundError(absl::StrCat("The model `", parsed->model,
                                                   "` does not exist; this server serves `",
                                                   options_.model_id, "`")),
                  *tenant, "");
    }
    const std::string named = request.has_header(kSessionHeader)
                                  ? request.get_header_value(kSessionHeader)
                                  : parsed->session_id;

    auto turn = std::make_shared<Turn>();
    turn->call = Call{*tenant, request_id, options_.gateway_secret, v1::Gistmem::NewStub(channel_)};
    turn->one_off = named.empty();
    turn->model = parsed->model;
    turn->completion_id = absl::StrCat("chatcmpl-", request_id);
    turn->created = UnixSeconds();
    turn->include_usage = parsed->include_usage;
    turn->start = start;
    absl::StatusOr<std::string> session = PrepareSession(turn->call, *parsed, named);
    if (!session.ok()) return fail(session.status(), *tenant, named);
    turn->session_id = *session;
    response.set_header(kSessionHeader, turn->session_id);

    v1::GenerateRequest generate;
    generate.set_session_id(turn->session_id);
    generate.mutable_message()->set_role(parsed->messages.back().role);
    generate.mutable_message()->set_content(parsed->messages.back().content);
    *generate.mutable_sampling() = parsed->sampling;
    turn->context = turn->call.Context();
    turn->reader = turn->call.stub->Generate(turn->context.get(), generate);
    // The first event says the turn was admitted; before it, errors are plain HTTP errors.
    v1::ChatEvent event;
    if (!turn->reader->Read(&event)) {
      return fail(FromGrpc(turn->Finish()), *tenant, turn->session_id);
    }

    if (!parsed->stream) {
      std::string text;
      v1::TurnEnd end;
      while (turn->reader->Read(&event)) {
        if (event.has_delta()) text += event.delta().text();
        if (event.has_end()) end = event.end();
      }
      if (grpc::Status finished = turn->Finish(); !finished.ok()) {
        return fail(FromGrpc(finished), *tenant, turn->session_id);
      }
      response.set_content(
          openai::CompletionJson(turn->completion_id, turn->created, turn->model, turn->session_id,
                                 text, end.finish_reason(), end.usage()),
          "application/json");
      LogRequest(request, 200, start, *tenant, request_id, turn->session_id);
      return;
    }

    response.set_header("Cache-Control", "no-cache");
    const std::string route = request.path, method = request.method;
    response.set_chunked_content_provider(
        "text/event-stream",
        [turn](size_t, httplib::DataSink& sink) {
          auto send = [&](const std::string& json) {
            const std::string line = absl::StrCat("data: ", json, "\n\n");
            if (!sink.write(line.data(), line.size())) {
              turn->context->TryCancel();  // the client went away: cancel the turn
              return false;
            }
            return true;
          };
          bool open =
              send(openai::ChunkJson(turn->completion_id, turn->created, turn->model,
                                     turn->session_id, std::string_view(), true, std::nullopt));
          v1::ChatEvent next;
          v1::TurnEnd end;
          bool ended = false;
          while (turn->reader->Read(&next)) {
            if (!open) continue;  // drain until the cancellation ends the call
            if (next.has_delta() && !next.delta().text().empty()) {
              open = send(openai::ChunkJson(turn->completion_id, turn->created, turn->model,
                                            turn->session_id, next.delta().text(), false,
                                            std::nullopt));
            }
            if (next.has_end()) {
              end = next.end();
              ended = true;
            }
          }
          const grpc::Status finished = turn->Finish();
          if (open && finished.ok() && ended) {
            open =
                send(openai::ChunkJson(turn->completion_id, turn->created, turn->model,
                                       turn->session_id, std::nullopt, false, end.finish_reason()));
            if (open && turn->include_usage) {
              open = send(openai::ChunkJson(turn->completion_id, turn->created, turn->model,
                                            turn->session_id, std::nullopt, false, std::nullopt,
                                            &end.usage()));
            }
          } else if (open && !finished.ok()) {
            open = send(openai::ErrorJson(FromGrpc(finished)));
          }
          if (open) {
            const std::string done = "data: [DONE]\n\n";
            sink.write(done.data(), done.size());
          }
          sink.done();
          return true;
        },
        [turn, route, method](bool) {
          metrics::ObserveHttpRequest(route, 200, absl::Now() - turn->start);
          LogEvent(spdlog::level::info, "http",
                   {{"method", method},
                    {"route", route},
                    {"tenant", turn->call.tenant},
                    {"session_id", turn->session_id},
                    {"request_id", turn->call.request_id}},
                   {{"status", 200.0},
                    {"duration_ms", absl::ToDoubleMilliseconds(absl::Now() - turn->start)}});
        });
  });
}

}  // namespace gistmem::service
