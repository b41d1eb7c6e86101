// Prometheus metrics of gistmem-server (prometheus-cpp), one process-wide registry.
//
// The rest of the service reports through the small functions below: each is one call at the
// place where the thing happens (a forward step, a store call, a session entering or leaving
// memory, a rate-limit refusal); nothing else in the service names prometheus. Gauges that
// describe the server's state now (queue depth, stored sessions, documents) are read when
// Prometheus scrapes, through refreshers that service/ops_endpoints.cc registers.
//
// Every metric is prefixed gistmem_; counters end in _total, durations are in seconds
// (_seconds), sizes in bytes (_bytes). The full list, with labels, is in service/README.md.
//
// Thread-safety: every function may be called from any thread at any time, also before and
// after a server runs (the registry lives as long as the process).
#pragma once

#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>

#include "absl/time/time.h"

namespace gistmem::service {

struct LiveSession;

namespace metrics {

// The registry every metric lives in, and a Collectable that first runs the refreshers, then
// collects it: give this one to an Exposer.
std::shared_ptr<prometheus::Collectable> ScrapeTarget();

// Runs `refresh` before every scrape until the returned handle is destroyed.
using RefresherHandle = std::shared_ptr<void>;
RefresherHandle AddRefresher(std::function<void()> refresh);

// One forward step ran with `sequences` sessions and `rows` rows (prompt chunks + decodes).
void ObserveForwardStep(int64_t sequences, int64_t rows);

// A store call took `elapsed`; `op` is the Store method's name.
void ObserveStoreRead(std::string_view op, absl::Duration elapsed);
void ObserveStoreWrite(std::string_view op, absl::Duration elapsed);

// A call was refused because its tenant is over --rate_limit.
void CountRateLimited(std::string_view tenant);

// A finished gRPC call (method without the service prefix, e.g. "Chat") and its status code.
void ObserveGrpcCall(std::string_view method, int code, absl::Duration elapsed);
// A finished HTTP request of the OpenAI-compatible endpoint (its route, e.g.
// "/v1/chat/completions") and its HTTP status.
void ObserveHttpRequest(std::string_view route, int status, absl::Duration elapsed);

// A turn: the time from its admission to its first generated token, each later gap between
// tokens, and its token counts when it ends.
void ObserveTimeToFirstToken(absl::Duration elapsed);
void ObserveInterTokenLatency(absl::Duration elapsed);
void CountTurnTokens(int64_t read, int64_t generated, int64_t cached);
void CountDocumentAttach();

// State read at scrape time by the refreshers (service/ops_endpoints.cc).
void SetQueueDepth(int64_t jobs);
void SetStoredSessions(int64_t sessions);
void SetStoreBytes(int64_t bytes);
void SetDocuments(int64_t documents, int64_t bytes);

// A session's cache as it now stands in memory (call after every operation that keeps it
// there), and its leaving memory (evicted, deleted, dropped after a failure). The gauges of
// sessions, cache bytes, retained entries, compression ratio and attached documents per
// policy are the sums over the sessions reported here.
void SessionInMemory(const LiveSession& session);
void SessionLeftMemory(const LiveSession& session);
// An idle session's pages moved to the host tier, and back (service/session_manager.h).
void SessionParked();
void SessionUnparked();

// "OK", "CANCELLED", ... "UNAUTHENTICATED" for gRPC's status codes 0-16, else "UNKNOWN".
std::string_view GrpcCodeName(int code);

}  // namespace metrics
}  // namespace gistmem::service
