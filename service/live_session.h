// A session while it is in memory: its committed metadata, the KV cache of its whole stream
// and the stream's tokens. SessionManager gives it to one operation at a time, which alone may
// touch the fields marked "owner"; the manager's own bookkeeping sits under its mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "store/store.h"

namespace gistmem::service {

struct LiveSession {
  explicit LiveSession(std::string session_id) : id(std::move(session_id)) {}

  const std::string id;
  // Set by DeleteSession; a running turn is cancelled and nothing more is committed.
  std::atomic<bool> deleted{false};
  // Bytes of `cache`, published by the owner for stats and the memory budget.
  std::atomic<int64_t> cache_bytes{0};

  // Owner: the operation that holds the session.
  bool loaded = false;
  store::SessionRecord record;            // as last committed
  std::unique_ptr<model::KvCache> cache;  // one entry per stream token (policy `full`)
  std::vector<int32_t> stream;            // every token read or written, in order
  bool reply_open = false;                // the last reply was cut by max_tokens

  // SessionManager's, under its mutex.
  bool busy = false;
  std::deque<std::function<void()>> waiting;
  bool counted_in_memory = false;  // holds one of max_sessions_in_memory's places
  int64_t accounted_bytes = 0;     // cache_bytes as last added to the manager's total
  bool in_lru = false;
  std::list<LiveSession*>::iterator lru_position;
};

}  // namespace gistmem::service
