// gistmem-server as an object: loads the model, opens the store, serves gistmem.v1.Gistmem
// (plus grpc.health.v1 and server reflection) until Shutdown. Tests run it in-process; main.cc
// adds flags and signals.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/engine.h"
#include "model/tokenizer/tokenizer.h"
#include "service/config.h"
#include "service/grpc_service.h"
#include "service/ops_endpoints.h"
#include "service/policy_resolver.h"
#include "service/runtime.h"
#include "service/scheduler.h"
#include "service/session_manager.h"
#include "service/store_factory.h"
#include "service/turn_executor.h"
#include "service/turn_tokens.h"
#include "service/worker_pool.h"
#include "store/store.h"

namespace gistmem::service {

// The service name health checks report on, besides the server as a whole ("").
inline constexpr char kHealthServiceName[] = "gistmem.v1.Gistmem";

class Server {
 public:
  // UNIMPLEMENTED for a policy other than full, INVALID_ARGUMENT for a bad config, the
  // model's or store's error when they cannot be opened, UNAVAILABLE when the address cannot
  // be bound.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerConfig& config);
  // Shuts down (no grace) if Shutdown was not called.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The port bound (the chosen one when the address asked for port 0), and host:port.
  int port() const { return port_; }
  std::string address() const;
  const std::string& model_fingerprint() const { return fingerprint_; }
  const Scheduler& scheduler() const { return *scheduler_; }
  model::Engine& engine() const { return *engine_; }
  const SessionManager& sessions() const { return *sessions_; }
  const DocumentRegistry& documents() const { return *documents_; }
  const store::Store& store() const { return *store_; }
  // The metrics and OpenAI-compatible HTTP endpoints (service/ops_endpoints.h).
  const OpsEndpoints& ops() const { return *ops_; }

  // Stops accepting calls, lets running turns finish for up to `grace` (open Chat streams
  // end after their running turn), cancels what is left, then stops the scheduler and the
  // workers and closes the store. Every acknowledged turn is already durable.
  void Shutdown(absl::Duration grace);

 private:
  explicit Server(const ServerConfig& config);
  absl::Status Init();

  const ServerConfig config_;
  std::unique_ptr<model::Engine> engine_;  // first: destroyed after all that holds its pages
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::unique_ptr<TurnTokens> turn_tokens_;
  std::unique_ptr<PolicyResolver> policies_;
  std::string fingerprint_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<StoreCollector> collector_;  // RADOS garbage collection; before store_ goes
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ServiceRuntime> runtime_;
  std::unique_ptr<SessionManager> sessions_;
  std::unique_ptr<TurnExecutor> turns_;
  std::unique_ptr<DocumentRegistry> documents_;
  std::unique_ptr<DocumentService> document_service_;
  std::unique_ptr<Auth> auth_;
  std::unique_ptr<GistmemService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<OpsEndpoints> ops_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace gistmem::service
