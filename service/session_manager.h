// Sessions: their metadata in the store, their caches in memory, and the rule that one
// operation at a time works on a session.
//
// A session is loaded from the store (transcript and KV segments, no recomputation) when an
// operation needs it and stays in memory until the least recently used idle sessions are
// dropped to honour max_sessions_in_memory and max_cache_bytes; everything in memory is also
// in the store, so dropping loses nothing.
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
  int64_t cache_bytes_in_memory() const;
  int64_t stored_sessions() const { return stored_sessions_.load(); }

 private:
  void Start(const std::shared_ptr<LiveSession>& session, Operation operation);
  void ReleaseSession(const std::shared_ptr<LiveSession>& session, bool keep_in_memory);
  // Loads the session if needed; runs on the worker of the operation that holds it.
  absl::Status EnsureLoaded(LiveSession& session);
  absl::Status LoadFromStore(LiveSession& session);
  // Drops idle sessions, least recently used first, until the limits hold. mutex_ held.
  void EvictLocked(int64_t sessions_to_free);
  void DropLocked(LiveSession& session);
  absl::Status ReserveStoredSession();

  const ServiceRuntime& runtime_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<LiveSession>> sessions_;  // "tenant/id"
  std::list<LiveSession*> lru_;  // idle loaded sessions, least recently used first
  int64_t sessions_in_memory_ = 0;
  int64_t bytes_in_memory_ = 0;
  std::atomic<int64_t> stored_sessions_{0};
};

// A fresh session id: "s-" and 32 random hex digits.
std::string NewSessionId();

}  // namespace gistmem::service
