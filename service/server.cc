#include "service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <exception>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "model/device_choice.h"
#include "model/fingerprint.h"
#include "service/call_observer.h"
#include "service/drain.h"
#include "service/timed_store.h"

namespace gistmem::service {
namespace {

absl::StatusOr<std::string> ReadPem(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path.string()));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsCredentials(
    const std::filesystem::path& cert, const std::filesystem::path& key) {
  absl::StatusOr<std::string> chain = ReadPem(cert), private_key = ReadPem(key);
  if (!chain.ok()) return chain.status();
  if (!private_key.ok()) return private_key.status();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({*private_key, *chain});
  return grpc::SslServerCredentials(options);
}

}  // namespace

Server::Server(const ServerConfig& config) : config_(config) {}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerConfig& config) {
  if (absl::Status valid = ValidateConfig(config); !valid.ok()) return valid;
  std::unique_ptr<Server> server(new Server(config));
  if (absl::Status started = server->Init(); !started.ok()) return started;
  return server;
}

absl::Status Server::Init() {
  try {
    spdlog::info("loading model from {}", config_.model_dir.string());
    fingerprint_ = model::ModelFingerprint(config_.model_dir);
    std::string device = config_.device;
    if (device.empty() || device == "auto") {
      const model::DeviceChoice choice = model::DefaultDevice();
      spdlog::info("--device auto: {} ({})", choice.device, choice.why);
      device = choice.device;
    }
    model::EngineOptions engine_options{.device = device,
                                        .num_threads = config_.compute_threads,
                                        .kv_pool_bytes = config_.kv_pool_bytes,
                                        .block_size = config_.kv_block_size};
    model::SetCudaFastPaths(engine_options, config_.cuda_fast_paths);
    absl::StatusOr<std::unique_ptr<model::Engine>> engine =
        model::LoadEngine(config_.model_dir, engine_options);
    if (!engine.ok()) return engine.status();
    engine_ = *std::move(engine);
    tokenizer_ = std::make_unique<model::Tokenizer>(
        model::Tokenizer::FromFile(config_.model_dir / "tokenizer.json"));
    turn_tokens_ = std::make_unique<TurnTokens>(*tokenizer_, engine_->config());
    policies_ = std::make_unique<PolicyResolver>(
        config_.policy,
        model::GistConfig::FromModelDir(config_.model_dir, engine_->config().vocab_size));
  } catch (const std::exception& error) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load the model in ", config_.model_dir.string(), ": ", error.what()));
  }
  spdlog::info("model {} on {}", fingerprint_, engine_->device());
  // The default policy must be one this model can serve.
  absl::StatusOr<memory::Policy> default_policy = policies_->Resolve(v1::MemoryPolicy());
  if (!default_policy.ok()) {
    return absl::Status(default_policy.status().code(),
                        absl::StrCat("--policy: ", default_policy.status().message()));
  }
  spdlog::info("default memory policy {}", memory::Describe(*default_policy));

  absl::StatusOr<std::unique_ptr<store::Store>> store = OpenStore(config_);
  if (!store.ok()) return store.status();
  collector_ = std::make_unique<StoreCollector>(**store, config_.store);
  store_ = TimeStoreCalls(*std::move(store));

  workers_ = std::make_unique<WorkerPool>(config_.worker_threads);
  scheduler_ = std::make_unique<Scheduler>(*engine_, config_.scheduler);
  int64_t max_session_tokens = engine_->config().max_position_embeddings;
  if (config_.limits.max_session_tokens > 0 &&
      (max_session_tokens <= 0 || config_.limits.max_session_tokens < max_session_tokens)) {
    max_session_tokens = config_.limits.max_session_tokens;
  }
  documents_ = std::make_unique<DocumentRegistry>(engine_->config(), fingerprint_, *store_,
                                                  engine_->kv_pool());
  runtime_ = std::make_unique<ServiceRuntime>(
      ServiceRuntime{config_, *engine_, *tokenizer_, *turn_tokens_, fingerprint_, *store_,
                     *scheduler_, *workers_, *policies_, *documents_, max_session_tokens});
  sessions_ = std::make_unique<SessionManager>(*runtime_);
  if (absl::Status counted = sessions_->Init(); !counted.ok()) return counted;
  turns_ = std::make_unique<TurnExecutor>(*runtime_, *sessions_);
  document_service_ = std::make_unique<DocumentService>(*runtime_, *sessions_);
  if (config_.api_keys_file.empty()) {
    auth_ = std::make_unique<Auth>();
  } else {
    absl::StatusOr<std::unique_ptr<Auth>> keys = Auth::FromFile(config_.api_keys_file);
    if (!keys.ok()) return keys.status();
    auth_ = *std::move(keys);
  }
  auth_->set_rate_limit(config_.tenant_rate_limit);
  service_ =
      std::make_unique<GistmemService>(*runtime_, *auth_, *sessions_, *turns_, *document_service_);
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!config_.tls_cert.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tls =
        TlsCredentials(config_.tls_cert, config_.tls_key);
    if (!tls.ok()) return tls.status();
    credentials = *std::move(tls);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen_address, credentials, &port_);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(config_.limits.max_message_bytes));
  builder.experimental().SetInterceptorCreators(CallObservers(*auth_));
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config_.listen_address));
  }
  server_->GetHealthCheckService()->SetServingStatus(kHealthServiceName, true);
  absl::StatusOr<std::unique_ptr<OpsEndpoints>> ops =
      OpsEndpoints::Start(config_, *this, *auth_, server_->InProcessChannel({}));
  if (!ops.ok()) return ops.status();
  ops_ = *std::move(ops);
  return absl::OkStatus();
}

std::string Server::address() const {
  const std::string& listen = config_.listen_address;
  const size_t colon = listen.rfind(':');
  return absl::StrCat(colon == std::string::npos ? listen : listen.substr(0, colon), ":", port_);
}

void Server::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_) {
    spdlog::info("shutting down: running turns have {}", absl::FormatDuration(grace));
    server_->GetHealthCheckService()->SetServingStatus(false);
    service_->BeginShutdown();
    if (ops_) ops_->StopHttp();
    grace = DrainTurns(*scheduler_, grace);  // health answers NOT_SERVING meanwhile
    // Waits for every call; those still running at the deadline are cancelled, which the
    // turns notice between tokens. The scheduler and workers must run until then.
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    server_->Wait();
  }
  ops_.reset();
  if (scheduler_) scheduler_->Stop();
  if (workers_) workers_->Stop();
  collector_.reset();
  store_.reset();  // closes the store; every commit was durable already
  spdlog::info("shut down");
}

Server::~Server() {
  Shutdown(absl::ZeroDuration());
}

}  // namespace gistmem::service
