#include "clients/cpp/chat/gistmem_client.h"

#include <algorithm>
#include <thread>

namespace gistmem::chat {

namespace {

std::shared_ptr<grpc::ChannelCredentials> Credentials(const Connection& connection) {
  if (connection.tls_ca_pem.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = connection.tls_ca_pem;
  return grpc::SslCredentials(options);
}

// UNAVAILABLE, or the stream reset under the call by the transport (a router whose server
// died mid-reply resets the HTTP/2 stream: UNKNOWN "Stream removed" or INTERNAL "RST_STREAM").
bool ConnectionLost(const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) return true;
  const std::string& message = status.error_message();
  return (status.error_code() == grpc::StatusCode::UNKNOWN ||
          status.error_code() == grpc::StatusCode::INTERNAL) &&
         (message.find("Stream removed") != std::string::npos ||
          message.find("RST_STREAM") != std::string::npos);
}

}  // namespace

GistmemClient::GistmemClient(const Connection& connection)
    : deadline_(connection.deadline),
      api_key_(connection.api_key),
      channel_(grpc::CreateChannel(connection.address, Credentials(connection))),
      stub_(v1::Gistmem::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

void GistmemClient::ApplyDeadline(grpc::ClientContext* context,
                                  const std::string& session_id) const {
  if (deadline_.count() > 0) context->set_deadline(std::chrono::system_clock::now() + deadline_);
  if (!api_key_.empty()) context->AddMetadata("x-api-key", api_key_);
  if (!session_id.empty()) context->AddMetadata(kSessionHeader, session_id);
}

grpc::Status GistmemClient::CreateSession(const v1::CreateSessionRequest& request,
                                          v1::Session* session) {
  grpc::ClientContext context;
  ApplyDeadline(&context, request.session_id());
  return stub_->CreateSession(&context, request, session);
}

grpc::Status GistmemClient::GetSession(const std::string& session_id, v1::Session* session) {
  grpc::ClientContext context;
  ApplyDeadline(&context, session_id);
  v1::GetSessionRequest request;
  request.set_session_id(session_id);
  return stub_->GetSession(&context, request, session);
}

grpc::Status GistmemClient::GetSessionStats(const std::string& session_id,
                                            v1::SessionStats* stats) {
  grpc::ClientContext context;
  ApplyDeadline(&context, session_id);
  v1::GetSessionStatsRequest request;
  request.set_session_id(session_id);
  return stub_->GetSessionStats(&context, request, stats);
}

grpc::Status GistmemClient::Append(const std::string& session_id, const v1::Message& message,
                                   v1::Usage* usage) {
  grpc::ClientContext context;
  ApplyDeadline(&context, session_id);
  v1::AppendRequest request;
  request.set_session_id(session_id);
  *request.mutable_message() = message;
  v1::AppendResponse response;
  grpc::Status status = stub_->Append(&context, request, &response);
  *usage = response.usage();
  return status;
}

grpc::Status GistmemClient::CheckHealth(
    const std::string& service, grpc::health::v1::HealthCheckResponse::ServingStatus* status) {
  grpc::ClientContext context;
  ApplyDeadline(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status rpc_status = health_->Check(&context, request, &response);
  *status = response.status();
  return rpc_status;
}

std::unique_ptr<ChatStream> GistmemClient::OpenChat(const std::string& session_id) {
  return std::make_unique<ChatStream>(*stub_, session_id, deadline_, api_key_);
}

grpc::Status GistmemClient::RunTurn(std::unique_ptr<ChatStream>* stream,
                                    const std::string& session_id, const v1::Turn& turn,
                                    const ChatStream::DeltaCallback& on_delta, TurnResult* result,
                                    int retries, std::chrono::milliseconds retry_delay) {
  std::string given;     // text on_delta has seen
  std::string replayed;  // a retried reply's text while it repeats `given`
  bool replaying = false;
  bool diverged = false;
  auto forward = [&](const v1::TokenDelta& delta) {
    if (!replaying) {
      given += delta.text();
      if (on_delta) on_delta(delta);
      return;
    }
    replayed += delta.text();
    const size_t common = std::min(replayed.size(), given.size());
    if (replayed.compare(0, common, given, 0, common) != 0) {
      diverged = true;
      (*stream)->CancelTurn();
      return;
    }
    if (replayed.size() <= given.size()) return;
    v1::TokenDelta rest = delta;
    rest.set_text(replayed.substr(given.size()));
    given = replayed;
    replaying = false;
    if (on_delta) on_delta(rest);
  };
  for (int attempt = 0;; ++attempt) {
    if (!*stream) *stream = OpenChat(session_id);
    grpc::Status status = (*stream)->RunTurn(turn, forward, result);
    if (diverged) {
      stream->reset();
      return grpc::Status(grpc::StatusCode::ABORTED,
                          "the retried turn's reply differs from the text already received");
    }
    if (status.ok()) {
      result->reply = given;
      return status;
    }
    stream->reset();
    if (!ConnectionLost(status) || attempt >= retries) {
      return status;
    }
    std::this_thread::sleep_for(retry_delay);
    replaying = true;
    replayed.clear();
  }
}

}  // namespace gistmem::chat
