#include "service/ops_endpoints.h"

#include <httplib.h>
#include <openssl/rand.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "service/http_listener.h"
#include "service/openai_gateway.h"
#include "service/server.h"

namespace gistmem::service {
namespace {

std::string RandomSecret() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return {};
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpsEndpoints>> OpsEndpoints::Start(
    const ServerConfig& config, const Server& server, Auth& auth,
    std::shared_ptr<grpc::Channel> in_process_channel) {
  std::unique_ptr<OpsEndpoints> ops(new OpsEndpoints());
  ops->refresher_ = metrics::AddRefresher([&server] {
    metrics::SetQueueDepth(server.scheduler().jobs_in_flight());
    metrics::SetStoredSessions(server.sessions().stored_sessions());
    metrics::SetStoreBytes(server.store().ApproximateDiskBytes());
    metrics::SetDocuments(server.documents().documents_in_memory(),
                          server.documents().bytes_in_memory());
  });
  if (!config.ops.metrics_listen.empty()) {
    // prometheus-cpp writes the exposition (TextSerializer); cpp-httplib serves it, as it
    // serves the OpenAI endpoint (Debian's civetweb, under prometheus-cpp's own Exposer,
    // crashed in its workers when linked into the server).
    ops->metrics_http_ = std::make_unique<httplib::Server>();
    ops->metrics_http_->Get("/metrics", [](const httplib::Request&, httplib::Response& response) {
      const std::string body =
          prometheus::TextSerializer().Serialize(metrics::ScrapeTarget()->Collect());
      response.set_content(body, "text/plain; version=0.0.4; charset=utf-8");
    });
    absl::StatusOr<int> port = BindAndServe(*ops->metrics_http_, config.ops.metrics_listen,
                                            "metrics_listen", &ops->metrics_listener_);
    if (!port.ok()) return port.status();
    ops->metrics_port_ = *port;
    spdlog::info("metrics on port {} (/metrics)", ops->metrics_port_);
  }
  if (!config.ops.http_listen.empty()) {
    GatewayOptions options;
    options.listen_address = config.ops.http_listen;
    options.model_id = std::filesystem::absolute(config.model_dir).lexically_normal().filename();
    if (options.model_id.empty()) {
      options.model_id =
          std::filesystem::absolute(config.model_dir).lexically_normal().parent_path().filename();
    }
    options.model_fingerprint = server.model_fingerprint();
    options.gateway_secret = RandomSecret();
    if (options.gateway_secret.empty()) return absl::InternalError("no random bytes for a secret");
    auth.set_gateway_secret(options.gateway_secret);
    absl::StatusOr<std::unique_ptr<OpenAiGateway>> gateway =
        OpenAiGateway::Start(options, auth, std::move(in_process_channel));
    if (!gateway.ok()) return gateway.status();
    ops->gateway_ = *std::move(gateway);
    ops->http_port_ = ops->gateway_->port();
    spdlog::info("OpenAI-compatible HTTP on port {} (model {})", ops->http_port_, options.model_id);
  }
  return ops;
}

void OpsEndpoints::StopHttp() {
  if (gateway_) gateway_->StopAccepting();
}

OpsEndpoints::~OpsEndpoints() {
  gateway_.reset();  // joins the HTTP threads
  if (metrics_http_) metrics_http_->stop();
  if (metrics_listener_.joinable()) metrics_listener_.join();
}

}  // namespace gistmem::service
