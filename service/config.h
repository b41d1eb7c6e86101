// Everything gistmem-server is told at start-up: where the model and the database are, where to
// listen, which memory policy to run and the limits it enforces. Filled from command-line flags
// (or a flag file: abseil's --flagfile=PATH, one --name=value per line) by ConfigFromFlags; tests
// build it directly.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/engine.h"
#include "service/policy_resolver.h"

namespace gistmem::service {

struct Limits {
  // Sessions whose cache is kept in memory, and the bytes of KV pages in use (every session's,
  // running or idle, and documents'); the least recently used idle sessions leave memory (they
  // stay in the store) when either is exceeded.
  int64_t max_sessions_in_memory = 256;
  int64_t max_cache_bytes = int64_t{4} << 30;
  // The host tier: bytes of host memory (page-locked for the GPU) that idle sessions' pages
  // may be parked in when max_cache_bytes would push them out of the engine's pool; beyond it
  // the least recently parked leave memory (they stay in the store). -1: automatic, 4 GiB when
  // the pool is on a GPU and 0 (no host tier) when it is host memory already (the CPU engine).
  int64_t max_host_cache_bytes = -1;
  // Sessions the store may hold; CreateSession and ForkSession fail beyond it.
  int64_t max_stored_sessions = 100000;
  // Tokens one request may add to a session's stream (template and message).
  int64_t max_request_tokens = 8192;
  // Tokens a session's stream may hold; 0 means the model's max_position_embeddings.
  int64_t max_session_tokens = 0;
  // Largest gRPC message the server accepts (gRPC answers RESOURCE_EXHAUSTED beyond it).
  int64_t max_message_bytes = int64_t{4} << 20;
  // Largest message content or system prompt, in bytes (INVALID_ARGUMENT beyond it).
  int64_t max_content_bytes = int64_t{1} << 20;
  // Upper bound of SamplingParams.max_tokens, and the value used when neither the request nor
  // the session sets it.
  int64_t max_new_tokens = 4096;
  int64_t default_max_tokens = 256;
};

struct SchedulerOptions {
  // Prompt tokens of one session fed to one forward step. Fixed per session, never split by the
  // load of others, so a session's numbers do not depend on what runs beside it.
  int64_t prefill_chunk = 256;
  // Rows (prompt chunks plus one per decoding session) one step may take; the oldest turns go
  // first, so none waits for ever.
  int64_t max_step_tokens = 2048;
};

// Operations (service/ops_endpoints.h): where Prometheus scrapes and where the
// OpenAI-compatible HTTP endpoint listens, HOST:PORT (port 0 picks one); empty: not served.
struct OpsOptions {
  std::string metrics_listen;
  std::string http_listen;
};

// Where sessions are stored (service/store_factory.h): the embedded RocksDB directory (one
// server), or a Ceph RADOS pool shared by every server of a cluster.
struct StoreConfig {
  enum class Kind { kRocksDb, kRados } kind = Kind::kRocksDb;
  std::string rados_pool;
  std::filesystem::path ceph_conf;  // empty: librados' default (/etc/ceph/ceph.conf)
  std::string ceph_client_id = "admin";
  // RADOS only: how often unreferenced KV segments are collected (0: never), and how old a
  // segment must be before it counts as abandoned rather than part of a commit in flight.
  absl::Duration gc_interval = absl::Minutes(10);
  absl::Duration gc_min_age = absl::Minutes(10);
};

struct ServerConfig {
  std::filesystem::path model_dir;
  std::filesystem::path db_path;  // the RocksDB directory (StoreConfig::Kind::kRocksDb)
  StoreConfig store;
  std::string listen_address = "127.0.0.1:50051";
  // Security (service/auth.h): API keys per tenant (empty: an open server, one tenant), calls
  // per second per tenant (0: no limit), and TLS certificate and key in PEM (empty: plaintext).
  std::filesystem::path api_keys_file;
  double tenant_rate_limit = 0;
  std::filesystem::path tls_cert;
  std::filesystem::path tls_key;
  // The memory policy of sessions that do not ask for one (see service/policy_resolver.h).
  PolicyDefaults policy;
  // The engine (model/engine.h): device name, its KV page pool's budget (every session's and
  // document's pages, live or idle) and entries per page. "auto": model::DefaultDevice().
  std::string device = "cpu";
  int64_t kv_pool_bytes = int64_t{8} << 30;
  int32_t kv_block_size = 16;
  // The CUDA engine's fast paths (model::EngineOptions, model::SetCudaFastPaths).
  bool cuda_fast_paths = model::kCudaFastPathsByDefault;
  int compute_threads = 0;  // 0: every core
  int worker_threads = 8;   // store I/O, commits and unary calls
  absl::Duration shutdown_grace = absl::Seconds(10);
  Limits limits;
  SchedulerOptions scheduler;
  OpsOptions ops;
};

// The configuration the flags describe. INVALID_ARGUMENT naming the flag when one is missing or
// out of range or the policy is unknown.
absl::StatusOr<ServerConfig> ConfigFromFlags();

// Applies `--store` (rocksdb:PATH or rados:POOL; empty changes nothing) to `config`, whose
// db_path holds --db. INVALID_ARGUMENT for another form or a conflict with --db.
absl::Status ParseStoreFlag(std::string_view spec, ServerConfig& config);

// Checks ranges; ConfigFromFlags calls it, and so does the server for configs
// built in code.
absl::Status ValidateConfig(const ServerConfig& config);

}  // namespace gistmem::service
