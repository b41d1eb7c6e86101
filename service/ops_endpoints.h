// What gistmem-server serves besides gRPC: Prometheus metrics (--metrics_listen, GET
// /metrics: prometheus-cpp's registry and text exposition, served by cpp-httplib) and the
// OpenAI-compatible HTTP endpoint
// (--http_listen, service/openai_gateway.h). Also feeds the metrics that are read at scrape
// time (queue depth, stored sessions, store bytes, documents) from the running server.
//
//   ops_ = OpsEndpoints::Start(config_, *this, *auth_, server_->InProcessChannel({}));
//   ...  ops_->StopHttp() before grpc::Server::Shutdown (returns at once); destroy after it
//   (waits for the HTTP requests still running, which end with their gRPC calls).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "service/auth.h"
#include "service/config.h"
#include "service/metrics.h"

namespace httplib {
class Server;
}

namespace gistmem::service {

class Server;
class OpenAiGateway;

class OpsEndpoints {
 public:
  // Starts what `config.ops` asks for; UNAVAILABLE when an address cannot be bound. `server`
  // and `auth` must outlive the result.
  static absl::StatusOr<std::unique_ptr<OpsEndpoints>> Start(
      const ServerConfig& config, const Server& server, Auth& auth,
      std::shared_ptr<grpc::Channel> in_process_channel);
  ~OpsEndpoints();

  // The ports bound (0 when not serving).
  int metrics_port() const { return metrics_port_; }
  int http_port() const { return http_port_; }

  // Stops the HTTP endpoint taking requests; returns at once (running ones end when gRPC
  // shuts down).
  void StopHttp();

 private:
  OpsEndpoints() = default;

  std::unique_ptr<httplib::Server> metrics_http_;
  std::thread metrics_listener_;
  std::unique_ptr<OpenAiGateway> gateway_;
  metrics::RefresherHandle refresher_;
  int metrics_port_ = 0;
  int http_port_ = 0;
};

}  // namespace gistmem::service
