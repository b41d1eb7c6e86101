// Which memory policy a session runs: the request's, with every unset field taken from the
// server's defaults (--policy, --ratio, --window, --sink_tokens), then from the model's
// gist_config.json, then from built-in values. The resolved policy is stored with the session,
// so a later change of defaults never changes how an existing session remembers.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "gistmem/v1/gistmem.pb.h"
#include "memory/policy.h"
#include "model/gist_config.h"

namespace gistmem::service {

struct PolicyDefaults {
  memory::PolicyKind kind = memory::PolicyKind::kFull;
  // false (no --policy given): `kind` is the model's: gist for a model with gist_config.json,
  // full for any other.
  bool kind_set = true;
  int64_t ratio = 0;  // 0: the model's default, else kBuiltinRatio
  int64_t window = 0;
  int64_t sink_tokens = 0;
};

// For checkpoints without gist_config.json (window and pool only).
inline constexpr int64_t kBuiltinRatio = 8;
inline constexpr int64_t kBuiltinWindow = 256;
inline constexpr int64_t kBuiltinSinkTokens = 4;

class PolicyResolver {
 public:
  PolicyResolver(PolicyDefaults defaults, std::optional<model::GistConfig> gist);

  // INVALID_ARGUMENT for parameters that do not fit (naming them), FAILED_PRECONDITION for
  // `gist` on a model without a gist token or at a ratio it was not trained for.
  absl::StatusOr<memory::Policy> Resolve(const v1::MemoryPolicy& requested) const;
  // A stored session's policy (already resolved), checked against this model.
  absl::StatusOr<memory::Policy> FromStored(const v1::MemoryPolicy& stored) const;
  static v1::MemoryPolicy ToProto(const memory::Policy& policy);

  const PolicyDefaults& defaults() const { return defaults_; }

 private:
  absl::StatusOr<memory::Policy> Check(memory::Policy policy) const;

  PolicyDefaults defaults_;
  std::optional<model::GistConfig> gist_;
};

}  // namespace gistmem::service
