// A session while it is in memory: its committed metadata, its memory (the KV cache as its
// policy keeps it) and the stream's raw tokens. SessionManager gives it to one operation at a time,
// which alone may touch the fields marked "owner"; the manager's own bookkeeping sits under its
// mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "memory/session_memory.h"
#include "store/store.h"

namespace gistmem::service {

struct LiveSession {
  LiveSession(std::string tenant_id, std::string session_id)
      : tenant(std::move(tenant_id)), id(std::move(session_id)) {}
  std::string key() const { return tenant + "/" + id; }

  const std::string tenant;
  const std::string id;
  // Set by DeleteSession; a running turn is cancelled and nothing more is committed.
  std::atomic<bool> deleted{false};
  // Bytes of the memory's cache, published by the owner for stats and the memory budget.
  std::atomic<int64_t> cache_bytes{0};

  // Owner: the operation that holds the session.
  bool loaded = false;
  store::SessionRecord record;  // as last committed
  // The ownership epoch this server acquired when it loaded the session (store/store.h);
  // every commit carries it. 0 for a store used by one server alone.
  uint64_t epoch = 0;
  std::unique_ptr<memory::SessionMemory> memory;  // the cache, as the session's policy keeps it
  std::vector<int32_t> stream;  // every raw token read or written, in order (the transcript's)
  // The last reply was cut by max_tokens; its last token is not read into the memory yet.
  bool reply_open = false;

  // SessionManager's, under its mutex.
  bool busy = false;
  std::deque<std::function<void()>> waiting;
  bool counted_in_memory = false;  // holds one of max_sessions_in_memory's places
  int64_t accounted_bytes = 0;     // cache_bytes as last added to the manager's total
  // In one of the manager's LRU lists (the resident idle sessions, or the parked ones).
  std::list<LiveSession*>* lru_list = nullptr;
  std::list<LiveSession*>::iterator lru_position;
  // The memory's own pages are parked in the host tier (memory::SessionMemory::Park), this
  // many bytes of host memory; the owner unparks before it uses the memory.
  bool parked = false;
  int64_t parked_bytes = 0;
};

}  // namespace gistmem::service
