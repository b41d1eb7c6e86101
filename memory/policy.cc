#include "memory/policy.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace gistmem::memory {

std::string_view PolicyName(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kFull:
      return "full";
    case PolicyKind::kWindow:
      return "window";
    case PolicyKind::kPool:
      return "pool";
    case PolicyKind::kGist:
      return "gist";
  }
  return "unknown";
}

absl::StatusOr<PolicyKind> ParsePolicyName(std::string_view name) {
  for (PolicyKind kind :
       {PolicyKind::kFull, PolicyKind::kWindow, PolicyKind::kPool, PolicyKind::kGist}) {
    if (name == PolicyName(kind)) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown memory policy '", std::string(name), "' (full, window, pool or gist)"));
}

std::string_view EntryKindName(EntryKind kind) {
  switch (kind) {
    case EntryKind::kRaw:
      return "raw";
    case EntryKind::kSink:
      return "sink";
    case EntryKind::kGist:
      return "gist";
    case EntryKind::kPooled:
      return "pooled";
  }
  return "unknown";
}

absl::Status Validate(const Policy& p) {
  const std::string what = Describe(p);
  if (p.kind == PolicyKind::kFull) return absl::OkStatus();
  if (p.sink_tokens < 0) return absl::InvalidArgumentError(what + ": sink_tokens must be >= 0");
  if (p.window < 1) return absl::InvalidArgumentError(what + ": window must be >= 1");
  if (p.kind == PolicyKind::kWindow) return absl::OkStatus();
  if (p.ratio < 1) return absl::InvalidArgumentError(what + ": ratio must be >= 1");
  if (p.window < p.ratio || p.window % p.ratio != 0) {
    return absl::InvalidArgumentError(what + ": window must be a multiple of ratio, >= ratio");
  }
  if (p.kind == PolicyKind::kGist && p.gist_token_id < 0) {
    return absl::FailedPreconditionError(
        what + ": the model has no gist token (no gist_config.json beside its config.json)");
  }
  return absl::OkStatus();
}

std::string Describe(const Policy& p) {
  switch (p.kind) {
    case PolicyKind::kFull:
      return "full";
    case PolicyKind::kWindow:
      return absl::StrCat("window(W=", p.window, ", S=", p.sink_tokens, ")");
    default:
      return absl::StrCat(std::string(PolicyName(p.kind)), "(r=", p.ratio, ", W=", p.window,
                          ", S=", p.sink_tokens, ")");
  }
}

bool GistFollows(const Policy& policy, int64_t raw_index) {
  return policy.kind == PolicyKind::kGist && (raw_index + 1) % policy.ratio == 0;
}

EntryVisibility RawVisibility(const Policy& policy, int64_t raw_index, int64_t position) {
  if (policy.kind == PolicyKind::kFull || position < policy.sink_tokens) return {};
  return {.from_clock = 0, .until_clock = raw_index + policy.window};
}

EntryVisibility GistVisibility() {
  return {};
}

EntryVisibility PooledVisibility(const Policy& policy, int64_t span) {
  return {.from_clock = (span + 1) * policy.ratio + policy.window,
          .until_clock = EntryVisibility::kForever};
}

int64_t MaxChunkTokens(const Policy& policy) {
  return policy.kind == PolicyKind::kPool ? policy.window : std::numeric_limits<int64_t>::max();
}

}  // namespace gistmem::memory
