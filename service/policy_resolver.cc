#include "service/policy_resolver.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace gistmem::service {
namespace {

absl::StatusOr<memory::PolicyKind> KindOf(v1::MemoryPolicy::Kind kind) {
  switch (kind) {
    case v1::MemoryPolicy::FULL:
      return memory::PolicyKind::kFull;
    case v1::MemoryPolicy::WINDOW:
      return memory::PolicyKind::kWindow;
    case v1::MemoryPolicy::POOL:
      return memory::PolicyKind::kPool;
    case v1::MemoryPolicy::GIST:
      return memory::PolicyKind::kGist;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown memory policy kind ", kind));
  }
}

v1::MemoryPolicy::Kind ProtoKind(memory::PolicyKind kind) {
  switch (kind) {
    case memory::PolicyKind::kFull:
      return v1::MemoryPolicy::FULL;
    case memory::PolicyKind::kWindow:
      return v1::MemoryPolicy::WINDOW;
    case memory::PolicyKind::kPool:
      return v1::MemoryPolicy::POOL;
    case memory::PolicyKind::kGist:
      return v1::MemoryPolicy::GIST;
  }
  return v1::MemoryPolicy::KIND_UNSPECIFIED;
}

int64_t FirstSet(std::initializer_list<int64_t> values) {
  for (int64_t v : values) {
    if (v != 0) return v;
  }
  return 0;
}

}  // namespace

PolicyResolver::PolicyResolver(PolicyDefaults defaults, std::optional<model::GistConfig> gist)
    : defaults_(defaults), gist_(std::move(gist)) {
  if (!defaults_.kind_set) {
    defaults_.kind = gist_ ? memory::PolicyKind::kGist : memory::PolicyKind::kFull;
    defaults_.kind_set = true;
  }
}

absl::StatusOr<memory::Policy> PolicyResolver::Resolve(const v1::MemoryPolicy& requested) const {
  if (requested.ratio() < 0 || requested.window() < 0 || requested.sink_tokens() < 0) {
    return absl::InvalidArgumentError("memory policy ratio, window and sink_tokens must be >= 0");
  }
  memory::Policy policy;
  if (requested.kind() == v1::MemoryPolicy::KIND_UNSPECIFIED) {
    policy.kind = defaults_.kind;
  } else {
    absl::StatusOr<memory::PolicyKind> kind = KindOf(requested.kind());
    if (!kind.ok()) return kind.status();
    policy.kind = *kind;
  }
  if (policy.kind == memory::PolicyKind::kFull) return policy;
  // Server defaults apply to the kind they were set for, the model's to every kind.
  const bool server_kind = policy.kind == defaults_.kind;
  const int64_t model_ratio = gist_ ? gist_->default_ratio : kBuiltinRatio;
  const int64_t model_window = gist_ ? gist_->window : kBuiltinWindow;
  const int64_t model_sinks = gist_ ? gist_->sink_tokens : kBuiltinSinkTokens;
  policy.ratio = FirstSet({requested.ratio(), server_kind ? defaults_.ratio : 0, model_ratio});
  policy.window = FirstSet({requested.window(), server_kind ? defaults_.window : 0, model_window});
  policy.sink_tokens = requested.sink_tokens() != 0                ? requested.sink_tokens()
                       : server_kind && defaults_.sink_tokens != 0 ? defaults_.sink_tokens
                                                                   : model_sinks;
  if (policy.kind == memory::PolicyKind::kWindow) policy.ratio = 0;
  return Check(policy);
}

absl::StatusOr<memory::Policy> PolicyResolver::FromStored(const v1::MemoryPolicy& stored) const {
  absl::StatusOr<memory::PolicyKind> kind = KindOf(stored.kind());
  if (!kind.ok()) return absl::DataLossError(kind.status().message());
  memory::Policy policy{.kind = *kind,
                        .ratio = stored.ratio(),
                        .window = stored.window(),
                        .sink_tokens = stored.sink_tokens(),
                        .gist_token_id = -1};
  return Check(policy);
}

absl::StatusOr<memory::Policy> PolicyResolver::Check(memory::Policy policy) const {
  if (policy.kind == memory::PolicyKind::kGist) {
    if (!gist_) {
      return absl::FailedPreconditionError(
          "memory policy gist needs a gist-trained model (gist_config.json beside config.json); "
          "this one serves full, window and pool");
    }
    if (std::ranges::find(gist_->ratios, policy.ratio) == gist_->ratios.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the model was trained for gist ratios ", absl::StrJoin(gist_->ratios, ", "),
                       "; ratio ", policy.ratio, " was asked for"));
    }
    policy.gist_token_id = gist_->gist_token_id;
  }
  if (absl::Status valid = memory::Validate(policy); !valid.ok()) return valid;
  return policy;
}

v1::MemoryPolicy PolicyResolver::ToProto(const memory::Policy& policy) {
  v1::MemoryPolicy proto;
  proto.set_kind(ProtoKind(policy.kind));
  proto.set_ratio(static_cast<int32_t>(policy.ratio));
  proto.set_window(static_cast<int32_t>(policy.window));
  proto.set_sink_tokens(static_cast<int32_t>(policy.sink_tokens));
  return proto;
}

}  // namespace gistmem::service
