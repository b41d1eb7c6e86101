// The memory policies of gist-method.md sections 2-3, in one place: which entries a query may
// see and which the cache keeps. Everything else (the engine's attention, the cache's
// eviction, the store's segments) applies what these functions say.
//
// The rule is stated on the session's "raw clock": the number of raw (non-gist) tokens of the
// stream up to and including a query. Raw token i (0-based, counted from the session's start)
// has clock i + 1; a gist token has the clock of the raw token before it.
//   full    every entry stays visible.
//   window  sinks (stream positions < S) stay; raw token i is visible while clock <= i + W.
//   pool    as window, and the raw tokens of span j (raw indices [j*r, (j+1)*r)) are replaced,
//           once all of them have left the window (clock >= (j+1)*r + W), by one entry whose
//           K and V are the mean of the span's non-sink raw entries. A raw entry that left the
//           window before its span did is not visible in between.
//   gist    a gist token follows every r-th raw token; gists and sinks stay, raw token i is
//           visible while clock <= i + W.
// An entry can be freed once its visibility ends before the current clock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "memory/entry.h"

namespace gistmem::memory {

enum class PolicyKind { kFull, kWindow, kPool, kGist };

std::string_view PolicyName(PolicyKind kind);
absl::StatusOr<PolicyKind> ParsePolicyName(std::string_view name);

struct Policy {
  PolicyKind kind = PolicyKind::kFull;
  int64_t ratio = 0;           // r: raw tokens per gist or pooled entry (window: unused)
  int64_t window = 0;          // W: raw tokens kept verbatim (full: unused)
  int64_t sink_tokens = 0;     // S: first stream positions kept for good (full: unused)
  int32_t gist_token_id = -1;  // gist only

  bool operator==(const Policy&) const = default;
};

// INVALID_ARGUMENT unless the parameters fit the kind: window and pool need W >= 1, pool and
// gist need r >= 1 and W a multiple of r with W >= r, gist needs a gist token id; S >= 0.
absl::Status Validate(const Policy& policy);
std::string Describe(const Policy& policy);

std::string_view EntryKindName(EntryKind kind);

// Whether a gist token follows raw token `raw_index`.
bool GistFollows(const Policy& policy, int64_t raw_index);
// Visibility of a raw token's entry; a raw token at a stream position < S is a sink.
EntryVisibility RawVisibility(const Policy& policy, int64_t raw_index, int64_t position);
EntryVisibility GistVisibility();
// Visibility of span j's pooled entry.
EntryVisibility PooledVisibility(const Policy& policy, int64_t span);
// The most tokens a forward step of one session may read at once, so that no query needs an
// entry the cache makes only after the step (a pooled span): W for pool, else unlimited.
int64_t MaxChunkTokens(const Policy& policy);

}  // namespace gistmem::memory
