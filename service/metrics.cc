#include "service/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "service/live_session.h"

namespace gistmem::service::metrics {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// Latency buckets from 1 ms to ~60 s, roughly x2.5 apart.
Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}
Histogram::BucketBoundaries StoreBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
}
Histogram::BucketBoundaries PowersOfTwo(double largest) {
  Histogram::BucketBoundaries buckets;
  for (double bound = 1; bound <= largest; bound *= 2)
    buckets.push_back(bound);
  return buckets;
}

// What one session in memory contributes to the per-policy gauges.
struct SessionSnapshot {
  std::string policy;
  std::string tier = "host";  // where its pages live: the engine pool's tier, "host" or "gpu"
  int64_t cache_bytes = 0;
  int64_t stream_tokens = 0;
  int64_t sink = 0, gist = 0, pooled = 0, window = 0, document = 0;
  int64_t documents = 0;
};

class Metrics {
 public:
  Metrics()
      : registry_(std::make_shared<prometheus::Registry>()),
        sessions_(BuildGauge()
                      .Name("gistmem_sessions")
                      .Help("Sessions per tier: gpu and host (cache in memory), store (stored)")
                      .Register(*registry_)),
        cache_bytes_(BuildGauge()
                         .Name("gistmem_cache_bytes")
                         .Help("KV cache bytes of sessions in memory, per tier and policy")
                         .Register(*registry_)),
        store_bytes_(BuildGauge()
                         .Name("gistmem_store_bytes")
                         .Help("Bytes on disk of the RocksDB store (live SST files)")
                         .Register(*registry_)),
        retained_entries_(BuildGauge()
                              .Name("gistmem_retained_entries")
                              .Help("KV entries per layer kept by sessions in memory, per kind "
                                    "(sink, gist, pooled, window, document) and policy")
                              .Register(*registry_)),
        compression_ratio_(BuildGauge()
                               .Name("gistmem_compression_ratio")
                               .Help("Stream tokens per retained entry over the sessions in "
                                     "memory, per policy")
                               .Register(*registry_)),
        attached_documents_(BuildGauge()
                                .Name("gistmem_attached_documents")
                                .Help("Documents attached to sessions in memory (one per "
                                      "attachment), per policy")
                                .Register(*registry_)),
        tokens_(BuildCounter()
                    .Name("gistmem_tokens_total")
                    .Help("Tokens of finished turns: read (prompt), generated, cached (reused)")
                    .Register(*registry_)),
        ttft_(BuildHistogram()
                  .Name("gistmem_time_to_first_token_seconds")
                  .Help("From a turn's admission to its first generated token")
                  .Register(*registry_)
                  .Add({}, LatencyBuckets())),
        inter_token_(BuildHistogram()
                         .Name("gistmem_inter_token_latency_seconds")
                         .Help("Between consecutive generated tokens of a turn")
                         .Register(*registry_)
                         .Add({}, LatencyBuckets())),
        step_sequences_(BuildHistogram()
                            .Name("gistmem_forward_step_sequences")
                            .Help("Sessions in one forward step (batch size)")
                            .Register(*registry_)
                            .Add({}, PowersOfTwo(1024))),
        step_rows_(BuildHistogram()
                       .Name("gistmem_forward_step_rows")
                       .Help("Rows (prompt tokens and decode tokens) in one forward step")
                       .Register(*registry_)
                       .Add({}, PowersOfTwo(65536))),
        queue_depth_(BuildGauge()
                         .Name("gistmem_scheduler_jobs")
                         .Help("Jobs submitted to the scheduler and not finished (queue depth)")
                         .Register(*registry_)
                         .Add({})),
        store_read_(BuildHistogram()
                        .Name("gistmem_store_read_seconds")
                        .Help("Duration of store reads, per operation")
                        .Register(*registry_)),
        store_write_(BuildHistogram()
                         .Name("gistmem_store_write_seconds")
                         .Help("Duration of store writes (synced), per operation")
                         .Register(*registry_)),
        documents_(BuildGauge()
                       .Name("gistmem_documents_in_memory")
                       .Help("Shared documents with a copy in memory")
                       .Register(*registry_)
                       .Add({})),
        document_bytes_(BuildGauge()
                            .Name("gistmem_document_bytes")
                            .Help("K/V bytes of the shared documents in memory (one copy each)")
                            .Register(*registry_)
                            .Add({})),
        document_attaches_(BuildCounter()
                               .Name("gistmem_document_attaches_total")
                               .Help("Documents attached to sessions")
                               .Register(*registry_)
                               .Add({})),
        grpc_requests_(BuildCounter()
                           .Name("gistmem_grpc_requests_total")
                           .Help("Finished gRPC calls per method and status code (OK included)")
                           .Register(*registry_)),
        grpc_errors_(BuildCounter()
                         .Name("gistmem_grpc_errors_total")
                         .Help("Finished gRPC calls whose status was not OK, per method and code")
                         .Register(*registry_)),
        grpc_duration_(BuildHistogram()
                           .Name("gistmem_grpc_request_duration_seconds")
                           .Help("Duration of gRPC calls per method")
                           .Register(*registry_)),
        http_requests_(BuildCounter()
                           .Name("gistmem_http_requests_total")
                           .Help("Finished requests of the OpenAI-compatible HTTP endpoint")
                           .Register(*registry_)),
        http_duration_(BuildHistogram()
                           .Name("gistmem_http_request_duration_seconds")
                           .Help("Duration of HTTP requests per route")
                           .Register(*registry_)),
        rate_limited_(BuildCounter()
                          .Name("gistmem_rate_limited_total")
                          .Help("Calls refused because their tenant was over --rate_limit")
                          .Register(*registry_)),
        host_tier_moves_(BuildCounter()
                             .Name("gistmem_host_tier_moves_total")
                             .Help("Idle sessions parked in the host tier (direction park) and "
                                   "brought back to the engine's pool (unpark)")
                             .Register(*registry_)) {
    // Families that should show from the first scrape, even before anything happened.
    for (const char* kind : {"read", "generated", "cached"})
      tokens_.Add({{"kind", kind}});
    for (const char* tier : {"gpu", "host", "store"})
      sessions_.Add({{"tier", tier}});
    for (const char* direction : {"park", "unpark"})
      host_tier_moves_.Add({{"direction", direction}});
  }

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& sessions_;
  prometheus::Family<prometheus::Gauge>& cache_bytes_;
  prometheus::Family<prometheus::Gauge>& store_bytes_;
  prometheus::Family<prometheus::Gauge>& retained_entries_;
  prometheus::Family<prometheus::Gauge>& compression_ratio_;
  prometheus::Family<prometheus::Gauge>& attached_documents_;
  prometheus::Family<prometheus::Counter>& tokens_;
  Histogram& ttft_;
  Histogram& inter_token_;
  Histogram& step_sequences_;
  Histogram& step_rows_;
  prometheus::Gauge& queue_depth_;
  prometheus::Family<Histogram>& store_read_;
  prometheus::Family<Histogram>& store_write_;
  prometheus::Gauge& documents_;
  prometheus::Gauge& document_bytes_;
  prometheus::Counter& document_attaches_;
  prometheus::Family<prometheus::Counter>& grpc_requests_;
  prometheus::Family<prometheus::Counter>& grpc_errors_;
  prometheus::Family<Histogram>& grpc_duration_;
  prometheus::Family<prometheus::Counter>& http_requests_;
  prometheus::Family<Histogram>& http_duration_;
  prometheus::Family<prometheus::Counter>& rate_limited_;
  prometheus::Family<prometheus::Counter>& host_tier_moves_;

  // Sessions in memory, by "tenant/id", and the refreshers run before each scrape.
  std::mutex mutex_;
  std::map<std::string, SessionSnapshot> sessions_in_memory_ ABSL_GUARDED_BY(mutex_);
  std::map<int64_t, std::function<void()>> refreshers_ ABSL_GUARDED_BY(mutex_);
  int64_t next_refresher_ ABSL_GUARDED_BY(mutex_) = 0;

  // Recomputes the per-policy gauges from the sessions in memory. mutex_ held.
  void RefreshSessionGaugesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
};

Metrics& Get() {
  static Metrics* metrics = new Metrics();  // never destroyed: used until the process exits
  return *metrics;
}

class ScrapeCollectable final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    Metrics& metrics = Get();
    std::vector<std::function<void()>> refreshers;
    {
      std::lock_guard lock(metrics.mutex_);
      metrics.RefreshSessionGaugesLocked();
      for (const auto& [id, refresh] : metrics.refreshers_)
        refreshers.push_back(refresh);
    }
    for (const std::function<void()>& refresh : refreshers)
      refresh();
    return metrics.registry_->Collect();
  }
};

void Metrics::RefreshSessionGaugesLocked() {
  struct Totals {
    int64_t stream = 0, kept = 0, documents = 0;
    int64_t sink = 0, gist = 0, pooled = 0, window = 0, document = 0;
  };
  // Every policy appears, with zeros when no session of it is in memory, so a series never
  // goes stale while its policy is unused.
  std::map<std::string, Totals> by_policy = {
      {"full", {}}, {"window", {}}, {"pool", {}}, {"gist", {}}};
  std::map<std::string, int64_t> sessions = {{"host", 0}, {"gpu", 0}};
  std::map<std::string, std::map<std::string, int64_t>> bytes = {{"host", {}}, {"gpu", {}}};
  for (const auto& [key, snapshot] : sessions_in_memory_) {
    Totals& totals = by_policy[snapshot.policy];
    ++sessions[snapshot.tier];
    bytes[snapshot.tier][snapshot.policy] += snapshot.cache_bytes;
    totals.stream += snapshot.stream_tokens;
    totals.sink += snapshot.sink;
    totals.gist += snapshot.gist;
    totals.pooled += snapshot.pooled;
    totals.window += snapshot.window;
    totals.document += snapshot.document;
    totals.documents += snapshot.documents;
    totals.kept +=
        snapshot.sink + snapshot.gist + snapshot.pooled + snapshot.window + snapshot.document;
  }
  // A session's pages live in its engine pool's tier: host memory for the CPU engine, device
  // memory for the CUDA engine.
  for (const auto& [tier, count] : sessions)
    sessions_.Add({{"tier", tier}}).Set(static_cast<double>(count));
  for (const auto& [policy, totals] : by_policy) {
    for (auto& [tier, per_policy] : bytes)
      cache_bytes_.Add({{"tier", tier}, {"policy", policy}})
          .Set(static_cast<double>(per_policy[policy]));
    const std::pair<const char*, int64_t> kinds[] = {{"sink", totals.sink},
                                                     {"gist", totals.gist},
                                                     {"pooled", totals.pooled},
                                                     {"window", totals.window},
                                                     {"document", totals.document}};
    for (const auto& [kind, entries] : kinds) {
      retained_entries_.Add({{"kind", kind}, {"policy", policy}}).Set(static_cast<double>(entries));
    }
    compression_ratio_.Add({{"policy", policy}})
        .Set(totals.kept > 0 ? static_cast<double>(totals.stream) / totals.kept : 1.0);
    attached_documents_.Add({{"policy", policy}}).Set(static_cast<double>(totals.documents));
  }
}

std::string LowerName(int kind) {
  std::string name = v1::MemoryPolicy::Kind_Name(static_cast<v1::MemoryPolicy::Kind>(kind));
  return absl::AsciiStrToLower(name.empty() ? "unknown" : name);
}

}  // namespace

std::string_view GrpcCodeName(int code) {
  static constexpr std::string_view kNames[] = {"OK",
                                                "CANCELLED",
                                                "UNKNOWN",
                                                "INVALID_ARGUMENT",
                                                "DEADLINE_EXCEEDED",
                                                "NOT_FOUND",
                                                "ALREADY_EXISTS",
                                                "PERMISSION_DENIED",
                                                "RESOURCE_EXHAUSTED",
                                                "FAILED_PRECONDITION",
                                                "ABORTED",
                                                "OUT_OF_RANGE",
                                                "UNIMPLEMENTED",
                                                "INTERNAL",
                                                "UNAVAILABLE",
                                                "DATA_LOSS",
                                                "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[code];
}

std::shared_ptr<prometheus::Collectable> ScrapeTarget() {
  Get();
  static auto* target =
      new std::shared_ptr<prometheus::Collectable>(std::make_shared<ScrapeCollectable>());
  return *target;
}

RefresherHandle AddRefresher(std::function<void()> refresh) {
  Metrics& metrics = Get();
  int64_t id = 0;
  {
    std::lock_guard lock(metrics.mutex_);
    id = metrics.next_refresher_++;
    metrics.refreshers_.emplace(id, std::move(refresh));
  }
  return RefresherHandle(nullptr, [id](void*) {
    Metrics& metrics = Get();
    std::lock_guard lock(metrics.mutex_);
    metrics.refreshers_.erase(id);
  });
}

void ObserveForwardStep(int64_t sequences, int64_t rows) {
  Get().step_sequences_.Observe(static_cast<double>(sequences));
  Get().step_rows_.Observe(static_cast<double>(rows));
}

void ObserveStoreRead(std::string_view op, absl::Duration elapsed) {
  Get()
      .store_read_.Add({{"op", std::string(op)}}, StoreBuckets())
      .Observe(absl::ToDoubleSeconds(elapsed));
}

void ObserveStoreWrite(std::string_view op, absl::Duration elapsed) {
  Get()
      .store_write_.Add({{"op", std::string(op)}}, StoreBuckets())
      .Observe(absl::ToDoubleSeconds(elapsed));
}

void CountRateLimited(std::string_view tenant) {
  Get().rate_limited_.Add({{"tenant", std::string(tenant)}}).Increment();
}

void ObserveGrpcCall(std::string_view method, int code, absl::Duration elapsed) {
  Metrics& metrics = Get();
  const std::string code_name(GrpcCodeName(code));
  metrics.grpc_requests_.Add({{"method", std::string(method)}, {"code", code_name}}).Increment();
  if (code != 0) {
    metrics.grpc_errors_.Add({{"method", std::string(method)}, {"code", code_name}}).Increment();
  }
  metrics.grpc_duration_.Add({{"method", std::string(method)}}, LatencyBuckets())
      .Observe(absl::ToDoubleSeconds(elapsed));
}

void ObserveHttpRequest(std::string_view route, int status, absl::Duration elapsed) {
  Metrics& metrics = Get();
  metrics.http_requests_.Add({{"route", std::string(route)}, {"code", absl::StrCat(status)}})
      .Increment();
  metrics.http_duration_.Add({{"route", std::string(route)}}, LatencyBuckets())
      .Observe(absl::ToDoubleSeconds(elapsed));
}

void ObserveTimeToFirstToken(absl::Duration elapsed) {
  Get().ttft_.Observe(absl::ToDoubleSeconds(elapsed));
}

void ObserveInterTokenLatency(absl::Duration elapsed) {
  Get().inter_token_.Observe(absl::ToDoubleSeconds(elapsed));
}

void CountTurnTokens(int64_t read, int64_t generated, int64_t cached) {
  Metrics& metrics = Get();
  metrics.tokens_.Add({{"kind", "read"}}).Increment(static_cast<double>(read));
  metrics.tokens_.Add({{"kind", "generated"}}).Increment(static_cast<double>(generated));
  metrics.tokens_.Add({{"kind", "cached"}}).Increment(static_cast<double>(cached));
}

void CountDocumentAttach() {
  Get().document_attaches_.Increment();
}

void SetQueueDepth(int64_t jobs) {
  Get().queue_depth_.Set(static_cast<double>(jobs));
}

void SetStoredSessions(int64_t sessions) {
  Get().sessions_.Add({{"tier", "store"}}).Set(static_cast<double>(sessions));
}

void SetStoreBytes(int64_t bytes) {
  Get().store_bytes_.Add({}).Set(static_cast<double>(bytes));
}

void SetDocuments(int64_t documents, int64_t bytes) {
  Get().documents_.Set(static_cast<double>(documents));
  Get().document_bytes_.Set(static_cast<double>(bytes));
}

void SessionInMemory(const LiveSession& session) {
  SessionSnapshot snapshot;
  const store::SessionRecord& record = session.record;
  snapshot.policy = LowerName(record.policy().kind());
  if (session.memory) snapshot.tier = std::string(session.memory->kv().pool().tier());
  snapshot.cache_bytes = session.cache_bytes.load();
  if (session.parked) {  // its own pages sit in the host tier
    snapshot.tier = "host";
    snapshot.cache_bytes = session.parked_bytes;
  }
  snapshot.stream_tokens = record.stream_tokens();
  const store::v1::MemoryStateRecord& memory = record.memory();
  snapshot.sink = memory.sink_entries();
  snapshot.gist = memory.gist_entries();
  snapshot.pooled = memory.pooled_entries();
  snapshot.window = memory.raw_entries();
  for (const store::v1::AttachedDocumentRecord& document : memory.documents())
    snapshot.document += document.entries();
  snapshot.documents = memory.documents_size();
  Metrics& metrics = Get();
  std::lock_guard lock(metrics.mutex_);
  metrics.sessions_in_memory_[session.key()] = std::move(snapshot);
}

void SessionParked() {
  Get().host_tier_moves_.Add({{"direction", "park"}}).Increment();
}

void SessionUnparked() {
  Get().host_tier_moves_.Add({{"direction", "unpark"}}).Increment();
}

void SessionLeftMemory(const LiveSession& session) {
  Metrics& metrics = Get();
  std::lock_guard lock(metrics.mutex_);
  metrics.sessions_in_memory_.erase(session.key());
}

}  // namespace gistmem::service::metrics
