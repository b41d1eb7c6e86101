#include "service/config.h"

#include <limits>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, model, "", "Model directory: config.json, *.safetensors, tokenizer.json");
ABSL_FLAG(std::string, db, "", "RocksDB directory of the session store (created when missing)");
ABSL_FLAG(std::string, store, "",
          "Session store: rocksdb:PATH (embedded, one server; the same as --db PATH) or "
          "rados:POOL (a Ceph RADOS pool shared by every server of a cluster; see --ceph_conf)");
ABSL_FLAG(std::string, ceph_conf, "",
          "Ceph configuration file for --store rados:POOL; empty = /etc/ceph/ceph.conf");
ABSL_FLAG(std::string, ceph_id, "admin", "Ceph client id (cephx user) for --store rados:POOL");
ABSL_FLAG(absl::Duration, store_gc_interval, absl::Minutes(10),
          "RADOS store: how often KV segments no session names are removed; 0 = never");
ABSL_FLAG(absl::Duration, store_gc_min_age, absl::Minutes(10),
          "RADOS store: age below which an unnamed segment may still belong to a commit in flight");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "Address to serve on, HOST:PORT; port 0 picks a free one (printed at start-up)");
ABSL_FLAG(std::string, policy, "",
          "Default memory policy of new sessions: full, window, pool or gist (gist needs a "
          "gist-trained model); a session may ask for another. Empty: the model's, gist for a "
          "model with gist_config.json, else full");
ABSL_FLAG(int64_t, ratio, 0, "Default raw tokens per gist or pooled entry; 0 = the model's");
ABSL_FLAG(int64_t, window, 0, "Default raw tokens kept verbatim; 0 = the model's");
ABSL_FLAG(int64_t, sink_tokens, 0, "Default first tokens kept for good; 0 = the model's");
ABSL_FLAG(std::string, api_keys_file, "",
          "File of \"KEY TENANT\" lines; callers send a key as \"authorization: Bearer KEY\" "
          "or \"x-api-key\" metadata. Empty: no keys, every call in tenant \"default\"");
ABSL_FLAG(double, rate_limit, 0, "Calls per second allowed to each tenant; 0 = no limit");
ABSL_FLAG(std::string, tls_cert, "", "TLS certificate chain (PEM); with --tls_key, serve TLS");
ABSL_FLAG(std::string, tls_key, "", "TLS private key (PEM)");
ABSL_FLAG(std::string, device, "auto",
          "Engine to run the model on: cpu, cuda (cuda:N for GPU N) or auto: cuda when this "
          "binary has the CUDA backend and a CUDA device is present, else cpu");
ABSL_FLAG(int64_t, kv_pool_bytes, int64_t{8} << 30,
          "Bytes of the engine's KV page pool: every session's and document's pages, live or "
          "idle; a step that finds no room fails alone with RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, kv_block_size, 16, "KV entries per page of the pool");
ABSL_FLAG(bool, cuda_fast_paths, gistmem::model::kCudaFastPathsByDefault,
          "CUDA: tensor-core attention, page tables kept on the GPU, CUDA graphs for decode "
          "steps and sampling on the GPU; off: their reference paths, which compute the same "
          "function");
ABSL_FLAG(int, threads, 0, "Threads of the CPU forward pass; 0 = every core");
ABSL_FLAG(int, workers, 8, "Threads for store I/O, commits and unary calls");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "On SIGTERM/SIGINT, how long running turns may take before they are cancelled");
ABSL_FLAG(int64_t, max_sessions_in_memory, 256, "Sessions whose KV cache stays in memory");
ABSL_FLAG(int64_t, max_cache_bytes, int64_t{4} << 30, "Bytes of KV cache kept in memory");
ABSL_FLAG(int64_t, host_cache_bytes, -1,
          "Bytes of host memory idle sessions' KV pages may be parked in when they leave the "
          "GPU's pool; -1 = 4 GiB with a GPU engine, 0 (off) with the CPU engine");
ABSL_FLAG(int64_t, max_stored_sessions, 100000, "Sessions the store may hold");
ABSL_FLAG(int64_t, max_request_tokens, 8192, "Tokens one request may add to a session");
ABSL_FLAG(int64_t, max_session_tokens, 0,
          "Tokens a session may hold; 0 = the model's max_position_embeddings");
ABSL_FLAG(int64_t, max_message_bytes, int64_t{4} << 20, "Largest gRPC message accepted");
ABSL_FLAG(int64_t, max_content_bytes, int64_t{1} << 20,
          "Largest message content or system prompt, in bytes");
ABSL_FLAG(int64_t, max_new_tokens, 4096, "Largest max_tokens a request may ask for");
ABSL_FLAG(int64_t, default_max_tokens, 256, "max_tokens when neither request nor session sets it");
ABSL_FLAG(int64_t, prefill_chunk, 256, "Prompt tokens of one session per forward step");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics at http://HOST:PORT/metrics; empty = off");
ABSL_FLAG(std::string, http_listen, "",
          "Serve the OpenAI-compatible HTTP API (/v1/chat/completions, /v1/models) on "
          "HOST:PORT; empty = off");
ABSL_FLAG(int64_t, max_step_tokens, 2048, "Rows of all sessions together per forward step");

namespace gistmem::service {
namespace {

absl::Status AtLeast(std::string_view flag, int64_t value, int64_t minimum) {
  if (value >= minimum) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", std::string(flag), " must be at least ", minimum, ", got ", value));
}

}  // namespace

absl::Status ParseStoreFlag(std::string_view spec, ServerConfig& config) {
  if (spec.empty()) return absl::OkStatus();  // --db, or nothing (then --db is required)
  const size_t colon = spec.find(':');
  const std::string_view kind = spec.substr(0, colon);
  const std::string_view where = colon == std::string_view::npos ? "" : spec.substr(colon + 1);
  if (where.empty() || (kind != "rocksdb" && kind != "rados")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--store must be rocksdb:PATH or rados:POOL, got \"", std::string(spec), "\""));
  }
  if (kind == "rocksdb") {
    if (!config.db_path.empty() && config.db_path != std::filesystem::path(where)) {
      return absl::InvalidArgumentError("--db and --store rocksdb:PATH name different paths");
    }
    config.store.kind = StoreConfig::Kind::kRocksDb;
    config.db_path = std::string(where);
  } else {
    if (!config.db_path.empty()) {
      return absl::InvalidArgumentError("--db and --store rados:POOL exclude each other");
    }
    config.store.kind = StoreConfig::Kind::kRados;
    config.store.rados_pool = std::string(where);
  }
  return absl::OkStatus();
}

absl::Status ValidateConfig(const ServerConfig& config) {
  if (config.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (config.store.kind == StoreConfig::Kind::kRocksDb && config.db_path.empty()) {
    return absl::InvalidArgumentError(
        "--db PATH (or --store rocksdb:PATH | rados:POOL) is required");
  }
  if (config.store.kind == StoreConfig::Kind::kRados && config.store.rados_pool.empty()) {
    return absl::InvalidArgumentError("--store rados:POOL needs a pool name");
  }
  if (config.store.gc_interval < absl::ZeroDuration() ||
      config.store.gc_min_age < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--store_gc_interval and --store_gc_min_age must be >= 0");
  }
  if (config.listen_address.empty()) return absl::InvalidArgumentError("--listen is required");
  const Limits& limits = config.limits;
  for (const absl::Status& status : {
           AtLeast("threads", config.compute_threads, 0),
           AtLeast("kv_pool_bytes", config.kv_pool_bytes, 1),
           AtLeast("kv_block_size", config.kv_block_size, 1),
           AtLeast("ratio", config.policy.ratio, 0),
           AtLeast("window", config.policy.window, 0),
           AtLeast("sink_tokens", config.policy.sink_tokens, 0),
           AtLeast("workers", config.worker_threads, 1),
           AtLeast("max_sessions_in_memory", limits.max_sessions_in_memory, 1),
           AtLeast("max_cache_bytes", limits.max_cache_bytes, 1),
           AtLeast("host_cache_bytes", limits.max_host_cache_bytes, -1),
           AtLeast("max_stored_sessions", limits.max_stored_sessions, 1),
           AtLeast("max_request_tokens", limits.max_request_tokens, 1),
           AtLeast("max_session_tokens", limits.max_session_tokens, 0),
           AtLeast("max_message_bytes", limits.max_message_bytes, 1024),
           AtLeast("max_content_bytes", limits.max_content_bytes, 1),
           AtLeast("max_new_tokens", limits.max_new_tokens, 1),
           AtLeast("default_max_tokens", limits.default_max_tokens, 1),
           AtLeast("prefill_chunk", config.scheduler.prefill_chunk, 1),
           AtLeast("max_step_tokens", config.scheduler.max_step_tokens, 1),
       }) {
    if (!status.ok()) return status;
  }
  if (limits.default_max_tokens > limits.max_new_tokens) {
    return absl::InvalidArgumentError("--default_max_tokens must not exceed --max_new_tokens");
  }
  if (limits.max_message_bytes > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("--max_message_bytes must fit in 31 bits");
  }
  if (config.tls_cert.empty() != config.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (config.tenant_rate_limit < 0) return absl::InvalidArgumentError("--rate_limit must be >= 0");
  if (config.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown_grace must not be negative");
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerConfig> ConfigFromFlags() {
  ServerConfig config;
  if (const std::string name = absl::GetFlag(FLAGS_policy); name.empty()) {
    config.policy.kind_set = false;
  } else {
    absl::StatusOr<memory::PolicyKind> policy = memory::ParsePolicyName(name);
    if (!policy.ok()) return policy.status();
    config.policy.kind = *policy;
  }
  config.policy.ratio = absl::GetFlag(FLAGS_ratio);
  config.policy.window = absl::GetFlag(FLAGS_window);
  config.policy.sink_tokens = absl::GetFlag(FLAGS_sink_tokens);
  config.model_dir = absl::GetFlag(FLAGS_model);
  config.db_path = absl::GetFlag(FLAGS_db);
  if (absl::Status store = ParseStoreFlag(absl::GetFlag(FLAGS_store), config); !store.ok()) {
    return store;
  }
  config.store.ceph_conf = absl::GetFlag(FLAGS_ceph_conf);
  config.store.ceph_client_id = absl::GetFlag(FLAGS_ceph_id);
  config.store.gc_interval = absl::GetFlag(FLAGS_store_gc_interval);
  config.store.gc_min_age = absl::GetFlag(FLAGS_store_gc_min_age);
  config.listen_address = absl::GetFlag(FLAGS_listen);
  config.api_keys_file = absl::GetFlag(FLAGS_api_keys_file);
  config.tenant_rate_limit = absl::GetFlag(FLAGS_rate_limit);
  config.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  config.tls_key = absl::GetFlag(FLAGS_tls_key);
  config.compute_threads = absl::GetFlag(FLAGS_threads);
  config.device = absl::GetFlag(FLAGS_device);
  config.kv_pool_bytes = absl::GetFlag(FLAGS_kv_pool_bytes);
  config.kv_block_size = absl::GetFlag(FLAGS_kv_block_size);
  config.cuda_fast_paths = absl::GetFlag(FLAGS_cuda_fast_paths);
  config.worker_threads = absl::GetFlag(FLAGS_workers);
  config.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  Limits& limits = config.limits;
  limits.max_sessions_in_memory = absl::GetFlag(FLAGS_max_sessions_in_memory);
  limits.max_cache_bytes = absl::GetFlag(FLAGS_max_cache_bytes);
  limits.max_host_cache_bytes = absl::GetFlag(FLAGS_host_cache_bytes);
  limits.max_stored_sessions = absl::GetFlag(FLAGS_max_stored_sessions);
  limits.max_request_tokens = absl::GetFlag(FLAGS_max_request_tokens);
  limits.max_session_tokens = absl::GetFlag(FLAGS_max_session_tokens);
  limits.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  limits.max_content_bytes = absl::GetFlag(FLAGS_max_content_bytes);
  limits.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  limits.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  config.scheduler.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  config.scheduler.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  config.ops.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  config.ops.http_listen = absl::GetFlag(FLAGS_http_listen);
  if (absl::Status status = ValidateConfig(config); !status.ok()) return status;
  return config;
}

}  // namespace gistmem::service
