// What one KV entry is and when queries may see it: the vocabulary shared by the memory
// policies (memory/policy.h), a session's paged KV (memory/session_kv.h) and the engines.
#pragma once

#include <cstdint>
#include <limits>

namespace gistmem::memory {

// When queries may see an entry, on the session's "raw clock": the number of raw (non-gist)
// tokens of the stream up to and including the query. A memory policy sets it for each entry
// (memory/policy.h says how); the engine only applies it, on top of causality.
struct EntryVisibility {
  static constexpr int64_t kForever = std::numeric_limits<int64_t>::max();
  int64_t from_clock = 0;
  int64_t until_clock = kForever;

  bool VisibleAt(int64_t clock) const { return from_clock <= clock && clock <= until_clock; }
  bool operator==(const EntryVisibility&) const = default;
};

// What kind of entry a cache slot holds.
enum class EntryKind : int32_t { kRaw = 1, kSink = 2, kGist = 3, kPooled = 4 };

// What one cache entry is. `serial` orders entries by when they were made (stored sessions
// restore them in that order). `raw_index` is the raw token's index for raw and sink entries,
// the span's last raw index for a pooled one, and the raw index of the token before it for a
// gist.
struct EntryInfo {
  EntryKind kind = EntryKind::kRaw;
  int64_t serial = 0;
  int64_t raw_index = 0;
  bool operator==(const EntryInfo&) const = default;
};

}  // namespace gistmem::memory
