// Sessions: their metadata in the store, their caches in memory, and the rule that one
// operation at a time works on a session.
//
// A session is loaded from the store (transcript and KV segments, no recomputation) when an
// operation needs it and stays in memory, in two tiers:
//   resident  its pages in the engine's pool (the GPU's, or host memory for the CPU engine)
//   parked    its pages copied to host memory (the host tier, max_host_cache_bytes), the
//             pool's pages given back; the next operation copies them back (no store read)
// When the pool's pages in use pass max_cache_bytes, the least recently used idle resident
// sessions are parked (or dropped, when the host tier cannot take them); when the host tier is
// full, the least recently parked are dropped; beyond max_sessions_in_memory (both tiers) the
// least recently used are dropped. Everything in memory is also in the store, so dropping
// loses nothing. Parking and dropping run under the manager's mutex: a parked copy is one
// device-to-host copy of the session's own pages.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "gistmem/v1/gistmem.pb.h"
#include "service/live_session.h"
#include "service/runtime.h"

namespace gistmem::service {

class SessionManager {
 public:
  explicit SessionManager(const ServiceRuntime& runtime);

  // Counts the stored sessions (for max_stored_sessions).
  absl::Status Init();

  // Unary operations. They do store I/O: call them from a worker thread.
  // Every session belongs to a tenant (service/auth.h); a session id names a session only
  // within its tenant.
  absl::StatusOr<store::SessionRecord> Create(std::string_view tenant,
                                              const v1::CreateSessionRequest& request);
  absl::StatusOr<store::SessionRecord> Get(std::string_view tenant,
                                           std::string_view session_id) const;
  absl::StatusOr<store::SessionPage> List(std::string_view tenant, int page_size,
                                          std::string_view page_token) const;
  // Cancels a running turn of the session and removes it from memory and store.
  absl::Status Delete(std::string_view tenant, std::string_view session_id);
  absl::StatusOr<store::SessionRecord> Fork(std::string_view tenant, std::string_view session_id,
                                            std::string_view new_session_id);
  absl::StatusOr<v1::SessionStats> Stats(std::string_view tenant,
                                         std::string_view session_id) const;

  // Called by an operation when it is done with the session; false drops the session from
  // memory (its state may differ from the store after a failure).
  using Release = std::function<void(bool keep_in_memory)>;
  // Gets the session loaded, or the status that says why it cannot be (NOT_FOUND,
  // FAILED_PRECONDITION for another model or policy, RESOURCE_EXHAUSTED, DATA_LOSS).
  using Operation =
      std::function<void(absl::StatusOr<std::shared_ptr<LiveSession>> session, Release release)>;

  // Runs `operation` on a worker once every earlier operation on the session has released it.
  // The operation must call `release` exactly once, possibly later and from another thread.
  // Returns ABORTED (without running it) when `if_idle` and the session is busy, and
  // INVALID_ARGUMENT for a malformed id.
  absl::Status RunExclusive(std::string_view tenant, std::string_view session_id, bool if_idle,
                            Operation operation);

  int64_t sessions_in_memory() const;
  // Pool bytes of the resident sessions as last accounted (documents not included).
  int64_t cache_bytes_in_memory() const;
  // Sessions parked in the host tier, and the host bytes they take.
  int64_t sessions_parked() const;
  int64_t parked_bytes() const;
  // The host tier's budget (max_host_cache_bytes resolved for the engine).
  int64_t host_cache_budget() const { return host_budget_; }
  int64_t stored_sessions() const { return stored_sessions_.load(); }

 private:
  void Start(const std::shared_ptr<LiveSession>& session, Operation operation);
  void ReleaseSession(const std::shared_ptr<LiveSession>& session, bool keep_in_memory);
  // Loads the session if needed; runs on the worker of the operation that holds it.
  absl::Status EnsureLoaded(LiveSession& session);
  absl::Status LoadFromStore(LiveSession& session);
  // Brings a parked session's pages back into the pool (making room first); the owner's.
  absl::Status Unpark(LiveSession& session);
  // Parks or drops idle sessions, least recently used first, until the limits hold with
  // `bytes_needed` more pool bytes in use. mutex_ held.
  void EvictLocked(int64_t sessions_to_free, int64_t bytes_needed = 0);
  // Parks an idle resident session if the host tier can take it (dropping the least recently
  // parked to make room); false when it cannot. mutex_ held.
  bool ParkLocked(LiveSession& session);
  void DropLocked(LiveSession& session);
  void UnlinkLocked(LiveSession& session);
  absl::Status ReserveStoredSession();

  const ServiceRuntime& runtime_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<LiveSession>> sessions_;  // "tenant/id"
  const int64_t host_budget_;
  std::list<LiveSession*> lru_;     // idle resident sessions, least recently used first
  std::list<LiveSession*> parked_;  // idle parked sessions, least recently parked first
  int64_t sessions_in_memory_ = 0;  // resident and parked
  int64_t bytes_in_memory_ = 0;
  int64_t parked_bytes_ = 0;
  std::atomic<int64_t> stored_sessions_{0};
};

// A fresh session id: "s-" and 32 random hex digits.
std::string NewSessionId();

}  // namespace gistmem::service
