// A thin client over the gistmem.v1 and grpc.health.v1 stubs: every call gets the same
// deadline, and results come back as grpc::Status plus an output message. Calls about a
// session carry its id as "x-gistmem-session" metadata (kSessionHeader), so a router in front
// of several servers sends them to the server that holds the session's cache.
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

  // Runs one turn on `*stream` (opened when null). A turn that fails with UNAVAILABLE (or
  // whose stream the transport reset: UNKNOWN "Stream removed", INTERNAL "RST_STREAM") before
  // its TurnEnd (nothing was stored: the server died, the router found none) is sent again
  // on a new stream, up to `retries` times, `retry_delay` apart; on_delta then sees only the
  // text beyond what it was given already, and a retried reply that does not begin with that
  // text (sampling that is not greedy) ends the turn with ABORTED. On failure *stream is
  // reset (open a new one for the next turn).
  grpc::Status RunTurn(std::unique_ptr<ChatStream>* stream, const std::string& session_id,
                       const v1::Turn& turn, const ChatStream::DeltaCallback& on_delta,
                       TurnResult* result, int retries = 3,
                       std::chrono::milliseconds retry_delay = std::chrono::milliseconds(500));

 private:
  // Deadline, API key and (when not empty) the session's routing header.
  void ApplyDeadline(grpc::ClientContext* context, const std::string& session_id = "") const;

  std::chrono::milliseconds deadline_;
  std::string api_key_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Gistmem::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace gistmem::chat
