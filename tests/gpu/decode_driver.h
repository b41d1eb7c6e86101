// Sequences decoded the way the service's scheduler runs them (service/scheduler.cc): each
// prompt read in chunks with no token request, then one token a step (with the gist row after
// it when the policy inserts one), many sequences in each step, sequences joining late and
// leaving when done. Two ways to pick the tokens:
//   kDevice   Engine::ForwardSample (the engine's own sampling: the CUDA engine's device path)
//   kHost     ForwardBatch, then model::SampleWithUniform on the host over the logits (kept)
// Each sequence draws from its own model::Sampler as the scheduler does. A run can be
// teacher-forced: each sequence then reads the token it is given instead of its own pick, so
// runs on two engines (or two paths) stay in lockstep and their picks compare step by step.
#pragma once

#include <algorithm>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "memory/policy.h"
#include "memory/session_memory.h"
#include "model/engine.h"
#include "model/sampling.h"

namespace gistmem::cuda {

struct DecodeSpec {
  memory::Policy policy;
  std::vector<int32_t> prompt;
  model::SamplingParams params;
  int64_t new_tokens = 16;
  int64_t chunk = 64;      // prompt rows a step (the policy may ask for fewer)
  int64_t first_step = 0;  // joins the batch at this step
};

enum class Picking { kDevice, kHost };

class DecodeRun {
 public:
  static constexpr int32_t kNoPick = model::kNoToken;

  DecodeRun(model::Engine& engine, std::vector<DecodeSpec> specs, Picking picking)
      : engine_(engine), picking_(picking), specs_(std::move(specs)) {
    for (const DecodeSpec& spec : specs_) {
      auto memory = std::make_unique<memory::SessionMemory>(engine.kv_pool(), spec.policy);
      memory::RowPlan rows = memory->Plan(spec.prompt);
      sequences_.push_back(
          Sequence(std::move(memory), model::Sampler(spec.params), std::move(rows)));
    }
  }

  bool done() const {
    return std::all_of(sequences_.begin(), sequences_.end(),
                       [](const Sequence& s) { return s.finished; });
  }
  int64_t steps() const { return step_; }
  size_t size() const { return sequences_.size(); }
  memory::SessionMemory& memory(size_t s) { return *sequences_[s].memory; }
  const DecodeSpec& spec(size_t s) const { return specs_[s]; }
  // kHost: the logits row each pick of the last step came from (empty where none).
  const std::vector<float>& last_logits(size_t s) const { return sequences_[s].last_logits; }
  // The uniform each pick of the last step was made with (0 for greedy).
  double last_uniform(size_t s) const { return sequences_[s].last_uniform; }
  const std::vector<int32_t>& history(size_t s) const { return sequences_[s].history; }

  // One step of every sequence with work. Returns each sequence's pick (kNoPick when it read
  // no last row this step). `forced`, when given, is the token each sequence reads next
  // instead of its pick (the picks of another run).
  absl::StatusOr<std::vector<int32_t>> Step(const std::vector<int32_t>* forced = nullptr) {
    std::vector<model::SequenceStep> batch;
    std::vector<std::vector<memory::SlotRef>> slots;
    std::vector<size_t> members;
    std::vector<model::TokenRequest> requests;
    std::vector<int> request_of;
    for (size_t i = 0; i < sequences_.size(); ++i) {
      Sequence& s = sequences_[i];
      if (s.finished || step_ < specs_[i].first_step) continue;
      const int64_t chunk =
          s.in_prompt ? std::min(specs_[i].chunk, memory::MaxChunkTokens(specs_[i].policy))
                      : s.rows.size();
      int64_t end = std::min(s.rows.size(), s.read + chunk);
      while (end < s.rows.size() && s.rows.entries[end].kind == memory::EntryKind::kGist)
        ++end;
      absl::StatusOr<std::vector<memory::SlotRef>> reserved =
          s.memory->Reserve(s.rows, s.read, end);
      if (!reserved.ok()) return reserved.status();
      s.begin = s.read;
      s.end = end;
      slots.push_back(*std::move(reserved));
      members.push_back(i);
      request_of.push_back(-1);
      if (end == s.rows.size()) {
        if (s.in_prompt) {
          s.history.insert(s.history.end(), specs_[i].prompt.begin(), specs_[i].prompt.end());
          s.in_prompt = false;
        }
        const model::SamplingParams& p = specs_[i].params;
        s.last_uniform = p.temperature == 0.f ? 0.0 : s.sampler.DrawUniform();
        request_of.back() = static_cast<int>(requests.size());
        requests.push_back({.params = p, .previous_tokens = s.history, .uniform = s.last_uniform});
      }
    }
    std::vector<int32_t> picks(sequences_.size(), kNoPick);
    if (members.empty()) {
      ++step_;
      return picks;
    }
    std::vector<const model::TokenRequest*> request_ptrs;
    for (size_t m = 0; m < members.size(); ++m) {
      const Sequence& s = sequences_[members[m]];
      auto part = [&](const auto& v) { return std::span(v).subspan(s.begin, s.end - s.begin); };
      const int64_t last_raw = s.rows.LastRawRow(s.begin, s.end);
      batch.push_back({.tokens = part(s.rows.tokens),
                       .positions = part(s.rows.positions),
                       .clocks = part(s.rows.clocks),
                       .slots = slots[m],
                       .kv = &s.memory->kv(),
                       .mode = model::LogitsMode::kRow,
                       .logits_row = std::max<int64_t>(last_raw - s.begin, 0)});
      request_ptrs.push_back(request_of[m] >= 0 ? &requests[request_of[m]] : nullptr);
    }
    absl::StatusOr<std::vector<int32_t>> tokens = picking_ == Picking::kDevice
                                                      ? engine_.ForwardSample(batch, request_ptrs)
                                                      : HostPicks(batch, request_ptrs, members);
    if (!tokens.ok()) {
      for (size_t i : members)
        sequences_[i].memory->Unreserve();
      return tokens.status();
    }
    for (size_t m = 0; m < members.size(); ++m) {
      Sequence& s = sequences_[members[m]];
      if (absl::Status applied = s.memory->Applied(s.rows, s.begin, s.end); !applied.ok()) {
        return applied;
      }
      s.read = s.end;
      if (request_ptrs[m] == nullptr) continue;
      const int32_t pick = (*tokens)[m];
      picks[members[m]] = pick;
      const int32_t next = forced != nullptr ? (*forced)[members[m]] : pick;
      s.history.push_back(next);
      if (static_cast<int64_t>(++s.generated) >= specs_[members[m]].new_tokens) {
        s.finished = true;  // the last token is not read (as the scheduler's token limit)
        continue;
      }
      const int32_t read[] = {next};
      s.rows = s.memory->Plan(read);
      s.read = 0;
    }
    ++step_;
    return picks;
  }

 private:
  struct Sequence {
    Sequence(std::unique_ptr<memory::SessionMemory> m, model::Sampler s, memory::RowPlan r)
        : memory(std::move(m)), sampler(std::move(s)), rows(std::move(r)) {}
    std::unique_ptr<memory::SessionMemory> memory;
    model::Sampler sampler;
    memory::RowPlan rows;
    int64_t read = 0, begin = 0, end = 0;
    bool in_prompt = true, finished = false;
    int64_t generated = 0;
    std::vector<int32_t> history;
    std::vector<float> last_logits;
    double last_uniform = 0;
  };

  // ForwardBatch and the CPU sampler over its logits (model::Engine's default ForwardSample).
  absl::StatusOr<std::vector<int32_t>> HostPicks(
      std::span<const model::SequenceStep> batch,
      std::span<const model::TokenRequest* const> requests, const std::vector<size_t>& members) {
    absl::StatusOr<std::vector<std::vector<float>>> logits = engine_.ForwardBatch(batch);
    if (!logits.ok()) return logits.status();
    std::vector<int32_t> tokens(batch.size(), kNoPick);
    for (size_t m = 0; m < batch.size(); ++m) {
      sequences_[members[m]].last_logits.clear();
      if (requests[m] == nullptr) continue;
      const model::TokenRequest& r = *requests[m];
      tokens[m] = model::SampleWithUniform(r.params, (*logits)[m], r.previous_tokens, r.uniform);
      sequences_[members[m]].last_logits = std::move((*logits)[m]);
    }
    return tokens;
  }

  model::Engine& engine_;
  Picking picking_;
  std::vector<DecodeSpec> specs_;
  std::vector<Sequence> sequences_;
  int64_t step_ = 0;
};

}  // namespace gistmem::cuda
