#include "bench/gpu/bench_sessions.h"

#include <algorithm>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"

namespace gistmem::bench {

absl::StatusOr<memory::Policy> MakePolicy(std::string_view name, int64_t ratio, int64_t window,
                                          int64_t sinks, int32_t gist_token_id) {
  absl::StatusOr<memory::PolicyKind> kind = memory::ParsePolicyName(name);
  if (!kind.ok()) return kind.status();
  memory::Policy policy{.kind = *kind};
  if (*kind != memory::PolicyKind::kFull) {
    policy.window = window;
    policy.sink_tokens = sinks;
  }
  if (*kind == memory::PolicyKind::kPool || *kind == memory::PolicyKind::kGist)
    policy.ratio = ratio;
  if (*kind == memory::PolicyKind::kGist) policy.gist_token_id = gist_token_id;
  if (absl::Status valid = memory::Validate(policy); !valid.ok()) return valid;
  return policy;
}

absl::Status Fill(memory::SessionMemory& memory, int64_t raw_tokens, int64_t vocab, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<int32_t> token(16, static_cast<int32_t>(vocab) - 1);
  // Chunks within what one step of the policy may read (pool: W rows).
  const int64_t chunk = std::min<int64_t>(512, memory::MaxChunkTokens(memory.policy()));
  std::vector<int32_t> raw;
  for (int64_t read = 0; read < raw_tokens; read += chunk) {
    raw.resize(std::min(chunk, raw_tokens - read));
    for (int32_t& t : raw)
      t = token(random);
    const memory::RowPlan plan = memory.Plan(raw);
    absl::StatusOr<std::vector<memory::SlotRef>> slots = memory.Reserve(plan, 0, plan.size());
    if (!slots.ok()) return slots.status();
    if (absl::Status applied = memory.Applied(plan, 0, plan.size()); !applied.ok()) return applied;
  }
  return absl::OkStatus();
}

absl::StatusOr<PendingRows> ReserveRows(memory::SessionMemory& memory,
                                        std::span<const int32_t> raw) {
  PendingRows rows{.plan = memory.Plan(raw), .slots = {}};
  absl::StatusOr<std::vector<memory::SlotRef>> slots =
      memory.Reserve(rows.plan, 0, rows.plan.size());
  if (!slots.ok()) return slots.status();
  rows.slots = *std::move(slots);
  return rows;
}

model::SequenceStep StepOf(const memory::SessionMemory& memory, const PendingRows& rows) {
  const int64_t last_raw = rows.plan.LastRawRow(0, rows.plan.size());
  return {.tokens = rows.plan.tokens,
          .positions = rows.plan.positions,
          .clocks = rows.plan.clocks,
          .slots = rows.slots,
          .kv = &memory.kv(),
          .mode = model::LogitsMode::kRow,
          .logits_row = last_raw < 0 ? rows.plan.size() - 1 : last_raw};
}

absl::Status DecodeStep(model::Engine& engine,
                        std::span<const std::unique_ptr<memory::SessionMemory>> sessions,
                        int32_t token, DecodeOutput output) {
  const int32_t raw[] = {token};
  std::vector<PendingRows> pending;
  pending.reserve(sessions.size());
  absl::Status status;
  for (const auto& session : sessions) {
    absl::StatusOr<PendingRows> rows = ReserveRows(*session, raw);
    if (!rows.ok()) {
      status = rows.status();
      break;
    }
    pending.push_back(*std::move(rows));
  }
  if (status.ok()) {
    std::vector<model::SequenceStep> steps;
    steps.reserve(pending.size());
    for (size_t s = 0; s < pending.size(); ++s)
      steps.push_back(StepOf(*sessions[s], pending[s]));
    if (output == DecodeOutput::kLogitsToHost) {
      status = engine.ForwardBatch(steps).status();
    } else {
      const model::TokenRequest greedy{};
      const std::vector<const model::TokenRequest*> requests(steps.size(), &greedy);
      status = engine.ForwardSample(steps, requests).status();
    }
  }
  for (size_t s = 0; s < pending.size(); ++s)
    sessions[s]->Unreserve();
  return status;
}

}  // namespace gistmem::bench
