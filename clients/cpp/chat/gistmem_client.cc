#include "clients/cpp/chat/gistmem_client.h"

namespace gistmem::chat {

namespace {

std::shared_ptr<grpc::ChannelCredentials> Credentials(const Connection& connection) {
  if (connection.tls_ca_pem.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = connection.tls_ca_pem;
  return grpc::SslCredentials(options);
}

}  // namespace

GistmemClient::GistmemClient(const Connection& connection)
    : deadline_(connection.deadline),
      api_key_(connection.api_key),
      channel_(grpc::CreateChannel(connection.address, Credentials(connection))),
      stub_(v1::Gistmem::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

void GistmemClient::ApplyDeadline(grpc::ClientContext* context) const {
  if (deadline_.count() > 0) context->set_deadline(std::chrono::system_clock::now() + deadline_);
  if (!api_key_.empty()) context->AddMetadata("x-api-key", api_key_);
}

grpc::Status GistmemClient::CreateSession(const v1::CreateSessionRequest& request,
                                          v1::Session* session) {
  grpc::ClientContext context;
  ApplyDeadline(&context);
  return stub_->CreateSession(&context, request, session);
}

grpc::Status GistmemClient::GetSession(const std::string& session_id, v1::Session* session) {
  grpc::ClientContext context;
  ApplyDeadline(&context);
  v1::GetSessionRequest request;
  request.set_session_id(session_id);
  return stub_->GetSession(&context, request, session);
}

grpc::Status GistmemClient::GetSessionStats(const std::string& session_id,
                                            v1::SessionStats* stats) {
  grpc::ClientContext context;
  ApplyDeadline(&context);
  v1::GetSessionStatsRequest request;
  request.set_session_id(session_id);
  return stub_->GetSessionStats(&context, request, stats);
}

grpc::Status GistmemClient::Append(const std::string& session_id, const v1::Message& message,
                                   v1::Usage* usage) {
  grpc::ClientContext context;
  ApplyDeadline(&context);
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

}  // namespace gistmem::chat
