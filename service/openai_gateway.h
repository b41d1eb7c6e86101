// gistmem's OpenAI-compatible HTTP endpoint (--http_listen HOST:PORT), on cpp-httplib:
//
//   POST /v1/chat/completions   streaming (server-sent events) and not
//   GET  /v1/models             the one model served
//
// It is a gateway: every request becomes calls of gistmem.v1.Gistmem on the server's own
// in-process gRPC channel (CreateSession, Append, Generate, DeleteSession), so sessions,
// limits, metrics and call logs are exactly those of gRPC. Callers present the same API keys
// ("authorization: Bearer KEY" or "x-api-key"); the gateway admits them once (tenant and
// rate) and passes the tenant on with a per-process secret (Auth::set_gateway_secret).
//
// A session is named by the x-gistmem-session header or a "session_id" body field: the
// request's last message is the new turn and the server's stored memory serves the rest (a
// session that does not exist yet is created with the request's system messages as its
// system prompt and its other messages appended first). Without one, the request runs in a
// one-off session deleted afterwards. Replies carry the session in x-gistmem-session and a
// "session_id" field. Errors are OpenAI-style JSON ({"error": {...}}) with the HTTP status of
// openai::HttpStatusOf.
//
// Thread-safety: requests run on httplib's thread pool; Stop may be called from any thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "service/auth.h"

namespace httplib {
class Server;
}

namespace gistmem::service {

struct GatewayOptions {
  std::string listen_address;     // HOST:PORT; port 0 picks one
  std::string model_id;           // what /v1/models lists and requests may name
  std::string model_fingerprint;  // also accepted as a model name
  std::string gateway_secret;     // as given to Auth::set_gateway_secret
};

class OpenAiGateway {
 public:
  // Binds and starts serving; UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<OpenAiGateway>> Start(
      const GatewayOptions& options, Auth& auth, std::shared_ptr<grpc::Channel> channel);
  // Stops (Stop) if not stopped.
  ~OpenAiGateway();

  int port() const { return port_; }
  // Stops accepting connections and returns at once.
  void StopAccepting();
  // StopAccepting, then waits for the requests being served (their gRPC calls end when the
  // gRPC server shuts down) and joins the listener.
  void Stop();

 private:
  OpenAiGateway(const GatewayOptions& options, Auth& auth, std::shared_ptr<grpc::Channel> channel);
  void Route();

  const GatewayOptions options_;
  Auth& auth_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<httplib::Server> http_;
  std::thread listener_;
  int port_ = 0;
};

}  // namespace gistmem::service
