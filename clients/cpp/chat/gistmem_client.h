// A thin client over the gistmem.v1 and grpc.health.v1 stubs: every call gets the same
// deadline, and results come back as grpc::Status plus an output message.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "clients/cpp/chat/chat_stream.h"
#include "gistmem/v1/gistmem.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace gistmem::chat {

// How to reach the server: its address, each RPC's deadline (zero: none), the API key sent as
// "x-api-key" metadata (empty: none), and the PEM of the CA that signed the server's TLS
// certificate (empty: plaintext).
struct Connection {
  std::string address;
  std::chrono::milliseconds deadline{0};
  std::string api_key;
  std::string tls_ca_pem;
};

class GistmemClient {
 public:
  explicit GistmemClient(const Connection& connection);

  grpc::Status CreateSession(const v1::CreateSessionRequest& request, v1::Session* session);
  grpc::Status GetSession(const std::string& session_id, v1::Session* session);
  grpc::Status GetSessionStats(const std::string& session_id, v1::SessionStats* stats);
  grpc::Status Append(const std::string& session_id, const v1::Message& message, v1::Usage* usage);
  grpc::Status CheckHealth(const std::string& service,
                           grpc::health::v1::HealthCheckResponse::ServingStatus* status);

  // Opens a Chat stream for the session; the server learns its id with the first turn.
  std::unique_ptr<ChatStream> OpenChat(const std::string& session_id);

 private:
  void ApplyDeadline(grpc::ClientContext* context) const;

  std::chrono::milliseconds deadline_;
  std::string api_key_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Gistmem::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace gistmem::chat
