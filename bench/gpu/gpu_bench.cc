// gistmem-gpu-bench: issue 13's rows for OUR engine, through model/engine.h (the CUDA engine
// loaded from a checkpoint, e.g. one bench/peers/peers.py wrote), one JSON line per row:
//
//   decode    batch-1 decode step at each --decode_contexts, under each --decode_policies
//   batched   --batch sequences x --batch_context, one decode step for all; and "mixed": the
//             same total KV in --batch sequences of very different lengths (no padding)
//   prefill   one --prefill_tokens-token prefill under each --prefill_policies, whole model,
//             and its attention alone (every layer), FLOP stated
//   capacity  how many --capacity_context-token sessions of each --capacity_policies fit in the
//             engine's KV pool (--kv_pool_gib), and their aggregate decode tok/s, all in one batch
//
// Contexts are appended under the policy without the model (bench/gpu/bench_sessions.h): a
// decode step costs the same arithmetic on any K/V values. Decode steps run as the service runs
// them (ForwardSample: a greedy token per sequence picked on the device, only tokens back) and
// are timed on the host clock: the call returns once its tokens are on the host, so that is the
// step's whole time, host work included. Each decode, batched and capacity row is followed by a
// "<row>_logits_to_host" row timing the same step through ForwardBatch (every sequence's logits
// copied to the host), the old way. Prefill steps run through ForwardBatch (one logits row).
// Attention alone is timed with CUDA events (bench/gpu/attention_timing.h).
// Every timing: --warmup untimed runs, then the median (min, max) of --steps runs.
//
// Floors, when --hbm_tb_s is given (the peers' torch.sum rate of the same run): (weight bytes +
// K/V bytes of every slot the step's segments hold) / HBM rate.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "bench/gpu/attention_timing.h"
#include "bench/gpu/bench_sessions.h"
#include "clients/cpp/common/help_flags.h"
#include "memory/session_memory.h"
#include "model/backend/cuda/cuda_engine.h"
#include "model/engine.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + safetensors)");
ABSL_FLAG(std::string, label, "", "what to call the model in the output (e.g. llama-8b)");
ABSL_FLAG(std::string, device, "cuda", "engine device: cuda or cuda:N");
ABSL_FLAG(std::string, rows, "decode,batched,prefill,capacity", "which rows, in this order");
ABSL_FLAG(double, kv_pool_gib, 100, "the engine's KV pool budget, GiB");
ABSL_FLAG(int32_t, block_size, 16, "KV entries per page");
ABSL_FLAG(std::string, decode_contexts, "2048,16384", "batch-1 decode contexts (raw tokens)");
ABSL_FLAG(std::string, decode_policies, "full,gist", "policies of the batch-1 decode rows");
ABSL_FLAG(int64_t, batch, 32, "sequences of the batched rows");
ABSL_FLAG(int64_t, batch_context, 4096, "context of each sequence of the batched row");
ABSL_FLAG(int64_t, prefill_tokens, 16384, "raw tokens of the prefill row");
ABSL_FLAG(std::string, prefill_policies, "full,gist", "policies of the prefill rows");
ABSL_FLAG(int64_t, capacity_context, 32768, "raw tokens of each capacity session");
ABSL_FLAG(std::string, capacity_policies, "full,gist,pool,window", "policies of the capacity rows");
ABSL_FLAG(int64_t, capacity_max_sessions, 256, "stop filling a policy's sessions here");
ABSL_FLAG(double, capacity_fill_s, 60, "stop filling a policy's sessions after this long");
ABSL_FLAG(int64_t, ratio, 8, "r of pool and gist");
ABSL_FLAG(int64_t, window, 512, "W of window, pool and gist");
ABSL_FLAG(int64_t, sinks, 4, "S of window, pool and gist");
ABSL_FLAG(int32_t, gist_token, -1, "gist token id (-1: vocab_size - 1)");
ABSL_FLAG(int, warmup, 3, "untimed runs before each timing");
ABSL_FLAG(int, steps, 20, "timed decode steps (and attention runs)");
ABSL_FLAG(int, prefill_reps, 3, "timed prefills (after an untimed 2048-token one), at most");
ABSL_FLAG(double, prefill_time_s, 15, "no further timed prefill of a policy after this long");
ABSL_FLAG(double, hbm_tb_s, 0, "HBM read rate for the floors (0: no floors)");
ABSL_FLAG(double, budget_s, 300, "start no row after this many seconds");
ABSL_FLAG(bool, cuda_fast_paths, true,
          "the CUDA engine's fast paths (model::SetCudaFastPaths): tensor-core attention, "
          "mirrored page tables, CUDA graphs, device sampling; false: the reference paths");
ABSL_FLAG(std::string, attention_kernel, "auto",
          "attention-alone timings: auto (as the engine) | tensor_cores | cuda_cores");
ABSL_FLAG(int32_t, attention_kv_chunk, 0,
          "attention-alone timings: KV slots per split (0: as the engine picks)");
ABSL_FLAG(int32_t, attention_ctas_per_sm, 0,
          "attention-alone timings: CTAs per multiprocessor the split aims at (0: the engine's)");

namespace gistmem::bench {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Sessions = std::vector<std::unique_ptr<memory::SessionMemory>>;

const Clock::time_point kStart = Clock::now();
double Elapsed() {
  return std::chrono::duration<double>(Clock::now() - kStart).count();
}

void Emit(json line) {
  line["t_s"] = std::round(Elapsed() * 10) / 10;
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

json Error(const std::string& row, const absl::Status& status) {
  return {{"row", row}, {"error", status.ToString()}};
}

std::vector<int64_t> Numbers(const std::string& list) {
  std::vector<int64_t> out;
  for (absl::string_view item : absl::StrSplit(list, ',', absl::SkipEmpty()))
    out.push_back(std::stoll(std::string(item)));
  return out;
}

std::vector<std::string> Names(const std::string& list) {
  return absl::StrSplit(list, ',', absl::SkipEmpty());
}

struct Stats {
  double median = 0, min = 0, max = 0;
  int64_t count = 0;
};

Stats Summary(std::vector<double> ms) {
  if (ms.empty()) return {};
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back(), static_cast<int64_t>(ms.size())};
}

// Host-clock ms of `reps` calls of f after `warmup` ones; the first failure is returned.
// Stops early (after at least one) once the timed calls took `cap_s` in all.
template <typename F>
absl::StatusOr<Stats> TimeCalls(F&& f, int warmup, int reps, double cap_s = 1e9) {
  for (int i = 0; i < warmup; ++i)
    if (absl::Status s = f(); !s.ok()) return s;
  std::vector<double> ms;
  double total_ms = 0;
  for (int i = 0; i < reps && (i == 0 || total_ms < cap_s * 1e3); ++i) {
    const auto start = Clock::now();
    if (absl::Status s = f(); !s.ok()) return s;
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    total_ms += ms.back();
  }
  return Summary(ms);
}

struct Model {
  model::Engine* engine = nullptr;
  const model::ModelConfig* config = nullptr;
  int64_t linear_params = 0;  // every layer's projections (what a row multiplies)
  int64_t head_params = 0;    // the LM head
  int64_t weight_bytes = 0;   // bf16, everything one decode step reads
  int64_t kv_bytes_per_entry = 0;
  int32_t gist_token = 0;
  std::string label;
};

Model Describe(model::Engine& engine) {
  const model::ModelConfig& c = engine.config();
  Model m;
  m.engine = &engine;
  m.config = &c;
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), i = c.intermediate_size;
  m.linear_params = c.num_layers * (h * q + 2 * h * kv + q * h + 3 * h * i);
  m.head_params = c.vocab_size * h;
  const int64_t norms = c.num_layers * 2 * h + h;
  m.weight_bytes =
      2 * (m.linear_params + norms + m.head_params + (c.tie_word_embeddings ? 0 : m.head_params));
  m.kv_bytes_per_entry = c.num_layers * 2 * kv * 2;
  const int32_t flag = absl::GetFlag(FLAGS_gist_token);
  m.gist_token = flag >= 0 ? flag : static_cast<int32_t>(c.vocab_size - 1);
  m.label = absl::GetFlag(FLAGS_label);
  return m;
}

absl::StatusOr<memory::Policy> PolicyNamed(const Model& m, const std::string& name) {
  return MakePolicy(name, absl::GetFlag(FLAGS_ratio), absl::GetFlag(FLAGS_window),
                    absl::GetFlag(FLAGS_sinks), m.gist_token);
}

int64_t SlotsHeld(const Sessions& sessions) {
  int64_t slots = 0;
  for (const auto& s : sessions)
    slots += s->kv().pinned().num_slots() + s->kv().window().num_slots();
  return slots;
}

// The floor and its ratio, when the HBM rate is known.
void AddFloor(json& line, const Model& m, int64_t kv_bytes, double step_ms, int64_t batch) {
  const double hbm = absl::GetFlag(FLAGS_hbm_tb_s);
  line["weight_bytes"] = m.weight_bytes;
  line["kv_bytes_per_step"] = kv_bytes;
  if (hbm <= 0) return;
  const double floor_ms = double(m.weight_bytes + kv_bytes) / (hbm * 1e12) * 1e3;
  line["floor_ms"] = floor_ms;
  line["floor_tok_per_s"] = double(batch) / (floor_ms * 1e-3);
  line["x_floor"] = step_ms / floor_ms;
  line["hbm_tb_per_s"] = hbm;
}

void AddAttention(json& line, const Model& m, const absl::StatusOr<AttentionTiming>& a) {
  if (!a.ok()) {
    line["attention_error"] = a.status().ToString();
    return;
  }
  const model::ModelConfig& c = *m.config;
  const double per_pair = 4.0 * double(c.head_dim * c.num_heads * c.num_layers);
  line["attention"] = {
      {"ms", a->ms_median},
      {"ms_min", a->ms_min},
      {"ms_max", a->ms_max},
      {"rows", a->rows},
      {"slots", a->slots},
      {"visible_pairs", a->visible_pairs},
      {"dense_pairs", a->pair_slots},
      {"flop_visible", per_pair * double(a->visible_pairs)},
      {"tflop_per_s_visible", per_pair * double(a->visible_pairs) / (a->ms_median * 1e-3) / 1e12},
      {"kv_tb_per_s", double(a->kv_bytes_per_step) / (a->ms_median * 1e-3) / 1e12},
      {"prefill_ctas", a->prefill_ctas},
      {"decode_ctas", a->decode_ctas},
      {"combined_outputs", a->combined_outputs},
      {"kv_chunk_flag", absl::GetFlag(FLAGS_attention_kv_chunk)},
      {"ctas_per_sm_flag", absl::GetFlag(FLAGS_attention_ctas_per_sm)},
      {"flop_note", "4 * head_dim * heads * layers * visible (row, slot) pairs"}};
}

// Attention alone for one decode step of `sessions` (their next raw token's rows).
absl::StatusOr<AttentionTiming> DecodeAttention(const Model& m, const Sessions& sessions) {
  const int32_t raw[] = {17};
  std::vector<QueryRows> queries;
  absl::Status status;
  size_t reserved = 0;
  for (const auto& s : sessions) {
    absl::StatusOr<PendingRows> rows = ReserveRows(*s, raw);
    if (!rows.ok()) {
      status = rows.status();
      break;
    }
    ++reserved;
    QueryRows q{.kv = &s->kv(), .positions = {}, .clocks = {}};
    for (int64_t r = 0; r < rows->plan.size(); ++r) {
      q.positions.push_back(static_cast<int32_t>(rows->plan.positions[r]));
      q.clocks.push_back(static_cast<int32_t>(rows->plan.clocks[r]));
    }
    queries.push_back(std::move(q));
  }
  absl::StatusOr<AttentionTiming> timing =
      status.ok() ? TimeAttention(*m.config, m.engine->kv_pool(), queries,
                                  absl::GetFlag(FLAGS_warmup), absl::GetFlag(FLAGS_steps))
                  : absl::StatusOr<AttentionTiming>(status);
  for (size_t i = 0; i < reserved; ++i)
    sessions[i]->Unreserve();
  return timing;
}

// The CUDA engine's counters so far (cumulative over the run): how its steps ran (graphs,
// eager) and what the device mirrors copied in the last one.
void AddEngineStats(json& line, const Model& m) {
  const std::optional<cuda::CudaEngineStats> s = cuda::CudaStatsOf(*m.engine);
  if (!s) return;
  line["engine_counters_so_far"] = {
      {"eager_steps", s->eager_steps},     {"graph_captures", s->graph_captures},
      {"graph_replays", s->graph_replays}, {"failed_captures", s->failed_captures},
      {"graph_clears", s->graph_clears},   {"mirror_values_last_step", s->mirror_values_last_step},
      {"mirror_bytes", s->mirror_bytes}};
}

// Decode steps over `sessions` (filled), one JSON line: greedy tokens picked on the device (the
// service's step), or with `output` kLogitsToHost every logits row copied to the host.
json DecodeLine(const Model& m, const Sessions& sessions, json line,
                DecodeOutput output = DecodeOutput::kGreedyTokens) {
  const int warmup = absl::GetFlag(FLAGS_warmup), steps = absl::GetFlag(FLAGS_steps);
  absl::StatusOr<Stats> t =
      TimeCalls([&] { return DecodeStep(*m.engine, sessions, 17, output); }, warmup, steps);
  const bool tokens = output == DecodeOutput::kGreedyTokens;
  if (!tokens) line["row"] = line["row"].get<std::string>() + "_logits_to_host";
  line["output"] = tokens ? "greedy_tokens" : "logits_to_host";
  if (!t.ok()) {
    line["error"] = t.status().ToString();
    return line;
  }
  const auto batch = static_cast<int64_t>(sessions.size());
  line["batch"] = batch;
  line["ms_per_step"] = t->median;
  line["ms_min"] = t->min;
  line["ms_max"] = t->max;
  line["tok_per_s"] = double(batch) / (t->median * 1e-3);
  line["steps_timed"] = steps;
  line["slots"] = SlotsHeld(sessions);
  line["bytes_to_host"] = batch * (tokens ? 4 : m.config->vocab_size * 4);
  AddFloor(line, m, SlotsHeld(sessions) * m.kv_bytes_per_entry, t->median, batch);
  AddEngineStats(line, m);
  if (tokens) AddAttention(line, m, DecodeAttention(m, sessions));
  return line;
}

// A decode row as the service runs it, then the same step with logits to the host.
void EmitDecodeLines(const Model& m, const Sessions& sessions, const json& line) {
  Emit(DecodeLine(m, sessions, line));
  Emit(DecodeLine(m, sessions, line, DecodeOutput::kLogitsToHost));
}

absl::StatusOr<Sessions> FilledSessions(const Model& m, const memory::Policy& policy,
                                        const std::vector<int64_t>& contexts) {
  Sessions sessions;
  for (size_t i = 0; i < contexts.size(); ++i) {
    sessions.push_back(std::make_unique<memory::SessionMemory>(m.engine->kv_pool(), policy));
    if (absl::Status s = Fill(*sessions.back(), contexts[i], m.config->vocab_size, 100 + i);
        !s.ok())
      return s;
  }
  return sessions;
}

json Base(const Model& m, const std::string& row, const std::string& policy) {
  return {{"part", "ours"}, {"row", row}, {"model", m.label}, {"policy", policy}};
}

void DecodeRows(const Model& m) {
  for (const std::string& name : Names(absl::GetFlag(FLAGS_decode_policies))) {
    for (int64_t context : Numbers(absl::GetFlag(FLAGS_decode_contexts))) {
      absl::StatusOr<memory::Policy> policy = PolicyNamed(m, name);
      if (!policy.ok()) return Emit(Error("decode", policy.status()));
      absl::StatusOr<Sessions> sessions = FilledSessions(m, *policy, {context});
      if (!sessions.ok()) {
        Emit(Error("decode", sessions.status()));
        continue;
      }
      json line = Base(m, "decode", memory::Describe(*policy));
      line["context"] = context;
      EmitDecodeLines(m, *sessions, line);
    }
  }
}

void BatchedRows(const Model& m) {
  const int64_t batch = absl::GetFlag(FLAGS_batch), context = absl::GetFlag(FLAGS_batch_context);
  absl::StatusOr<memory::Policy> full = PolicyNamed(m, "full");
  // Equal lengths, then the same total in lengths from context/8 to about 2 * context.
  std::vector<int64_t> equal(batch, context), mixed(batch);
  for (int64_t i = 0; i < batch; ++i)
    mixed[i] = context / 8 + (2 * context - context / 4) * i / std::max<int64_t>(1, batch - 1);
  for (const auto& [kind, contexts] : {std::pair{"equal", equal}, std::pair{"mixed", mixed}}) {
    absl::StatusOr<Sessions> sessions = FilledSessions(m, *full, contexts);
    if (!sessions.ok()) {
      Emit(Error("batched", sessions.status()));
      continue;
    }
    json line = Base(m, "batched", "full");
    line["lengths"] = kind;
    line["context"] = context;
    line["context_min"] = *std::min_element(contexts.begin(), contexts.end());
    line["context_max"] = *std::max_element(contexts.begin(), contexts.end());
    EmitDecodeLines(m, *sessions, line);
  }
}

void PrefillRows(const Model& m) {
  const int64_t n = absl::GetFlag(FLAGS_prefill_tokens);
  std::vector<int32_t> raw(n);
  for (int64_t i = 0; i < n; ++i)
    raw[i] = static_cast<int32_t>(16 + (i * 7919) % (m.config->vocab_size - 16));
  {  // Warm-up: kernels, cuBLASLt heuristics and scratch, on a short prefill of its own.
    memory::SessionMemory warm(m.engine->kv_pool(), memory::Policy{});
    absl::StatusOr<PendingRows> rows =
        ReserveRows(warm, std::span(raw).first(std::min<int64_t>(n, 2048)));
    if (rows.ok()) {
      const model::SequenceStep step = StepOf(warm, *rows);
      if (absl::Status s = m.engine->ForwardBatch(std::span(&step, 1)).status(); !s.ok())
        return Emit(Error("prefill", s));
    }
  }
  for (const std::string& name : Names(absl::GetFlag(FLAGS_prefill_policies))) {
    if (Elapsed() > absl::GetFlag(FLAGS_budget_s)) {
      Emit({{"part", "ours"}, {"row", "prefill"}, {"policy", name}, {"skipped", "budget"}});
      continue;
    }
    absl::StatusOr<memory::Policy> policy = PolicyNamed(m, name);
    if (!policy.ok()) return Emit(Error("prefill", policy.status()));
    if (memory::MaxChunkTokens(*policy) < n + n / std::max<int64_t>(1, policy->ratio)) {
      Emit(Error("prefill", absl::InvalidArgumentError(memory::Describe(*policy) +
                                                       " cannot read the prefill in one step")));
      continue;
    }
    memory::SessionMemory memory(m.engine->kv_pool(), *policy);
    std::unique_ptr<PendingRows> rows;
    auto once = [&]() -> absl::Status {
      memory.Unreserve();
      absl::StatusOr<PendingRows> reserved = ReserveRows(memory, raw);
      if (!reserved.ok()) return reserved.status();
      rows = std::make_unique<PendingRows>(*std::move(reserved));
      const model::SequenceStep step = StepOf(memory, *rows);
      return m.engine->ForwardBatch(std::span(&step, 1)).status();
    };
    const double cap_s = absl::GetFlag(FLAGS_prefill_time_s);
    absl::StatusOr<Stats> t = TimeCalls(once, 0, absl::GetFlag(FLAGS_prefill_reps), cap_s);
    json line = Base(m, "prefill", memory::Describe(*policy));
    line["raw_tokens"] = n;
    if (!t.ok()) {
      memory.Unreserve();
      line["error"] = t.status().ToString();
      Emit(line);
      continue;
    }
    const int64_t rows_read = rows->plan.size();
    const double linear =
        2.0 * double(m.linear_params) * double(rows_read) + 2.0 * double(m.head_params);
    const model::ModelConfig& c = *m.config;
    const double causal = 4.0 * double(c.head_dim * c.num_heads * c.num_layers) *
                          double(rows_read) * double(rows_read + 1) / 2;
    line["rows"] = rows_read;
    line["ms"] = t->median;
    line["ms_min"] = t->min;
    line["ms_max"] = t->max;
    line["runs_timed"] = t->count;
    line["flop_linear"] = linear;
    line["flop_attention_causal"] = causal;
    line["tflop_per_s_causal_count"] = (linear + causal) / (t->median * 1e-3) / 1e12;
    line["flop_note"] =
        "linear 2*W*rows + LM head for 1 row; causal 4*hd*H*L*rows(rows+1)/2; "
        "attention.flop_visible counts only what the policy lets each row see";
    QueryRows q{.kv = &memory.kv(), .positions = {}, .clocks = {}};
    for (int64_t r = 0; r < rows_read; ++r) {
      q.positions.push_back(static_cast<int32_t>(rows->plan.positions[r]));
      q.clocks.push_back(static_cast<int32_t>(rows->plan.clocks[r]));
    }
    // Attention alone: as many runs as fit in the cap (it is a part of the forward's time).
    const int attention_reps = static_cast<int>(
        std::clamp(cap_s * 1e3 / t->median, 1.0, double(absl::GetFlag(FLAGS_prefill_reps))));
    AddAttention(line, m,
                 TimeAttention(c, m.engine->kv_pool(), std::span(&q, 1), 0, attention_reps));
    memory.Unreserve();
    Emit(line);
  }
}

void CapacityRows(const Model& m, double deadline_s) {
  const int64_t context = absl::GetFlag(FLAGS_capacity_context);
  const int64_t max_sessions = absl::GetFlag(FLAGS_capacity_max_sessions);
  memory::BlockPool& pool = m.engine->kv_pool();
  for (const std::string& name : Names(absl::GetFlag(FLAGS_capacity_policies))) {
    if (Elapsed() > deadline_s) {
      Emit({{"part", "ours"}, {"row", "capacity"}, {"policy", name}, {"skipped", "budget"}});
      continue;
    }
    absl::StatusOr<memory::Policy> policy = PolicyNamed(m, name);
    if (!policy.ok()) return Emit(Error("capacity", policy.status()));
    const double fill_until = Elapsed() + absl::GetFlag(FLAGS_capacity_fill_s);
    Sessions sessions;
    std::string capped_by = "max_sessions";
    int64_t bytes_one = 0;
    while (static_cast<int64_t>(sessions.size()) < max_sessions) {
      if (Elapsed() > fill_until) {
        capped_by = "fill_time";
        break;
      }
      auto session = std::make_unique<memory::SessionMemory>(pool, *policy);
      absl::Status filled = Fill(*session, context, m.config->vocab_size, 1000 + sessions.size());
      if (!filled.ok()) {
        capped_by = absl::IsResourceExhausted(filled) ? "kv_budget" : filled.ToString();
        break;  // `session` (a partial context) goes back to the pool
      }
      if (sessions.empty()) bytes_one = session->Bytes();
      sessions.push_back(std::move(session));
    }
    // Room for each session's decode rows (a raw entry and a gist may each open a page).
    while (!sessions.empty() &&
           pool.budget_bytes() - pool.bytes_in_use() <
               2 * static_cast<int64_t>(sessions.size()) * pool.layout().page_bytes()) {
      sessions.pop_back();
      capped_by = "kv_budget";
    }
    json line = Base(m, "capacity", memory::Describe(*policy));
    line["context"] = context;
    line["sessions"] = sessions.size();
    line["capped_by"] = capped_by;
    line["kv_pool_bytes"] = pool.budget_bytes();
    line["bytes_per_session"] = bytes_one;
    line["sessions_by_arithmetic"] = bytes_one > 0 ? pool.budget_bytes() / bytes_one : 0;
    line["retained_per_session"] = sessions.empty() ? 0 : sessions[0]->Counts().total();
    if (sessions.empty()) {
      Emit(line);
    } else {
      EmitDecodeLines(m, sessions, line);
    }
  }
}

// Pageable device-to-host copy rate: what the logits of a step cost on the way to the host.
void CopyRate() {
  const size_t bytes = size_t{64} << 20;
  void* device = nullptr;
  if (cudaMalloc(&device, bytes) != cudaSuccess) return;
  std::vector<char> host(bytes);
  cudaMemcpy(host.data(), device, bytes, cudaMemcpyDeviceToHost);
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    cudaMemcpy(host.data(), device, bytes, cudaMemcpyDeviceToHost);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  cudaFree(device);
  Emit({{"part", "ours"},
        {"row", "d2h"},
        {"bytes", bytes},
        {"ms", Summary(ms).median},
        {"gb_per_s", double(bytes) / (Summary(ms).median * 1e-3) / 1e9}});
}

int Main() {
  const auto load_start = Clock::now();
  model::EngineOptions options{
      .device = absl::GetFlag(FLAGS_device),
      .kv_pool_bytes = static_cast<int64_t>(absl::GetFlag(FLAGS_kv_pool_gib) * (1 << 30)),
      .block_size = absl::GetFlag(FLAGS_block_size)};
  model::SetCudaFastPaths(options, absl::GetFlag(FLAGS_cuda_fast_paths));
  absl::StatusOr<std::unique_ptr<model::Engine>> engine =
      model::LoadEngine(absl::GetFlag(FLAGS_model), options);
  if (!engine.ok()) {
    Emit(Error("load", engine.status()));
    return 1;
  }
  Model m = Describe(**engine);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  Emit({{"part", "ours"},
        {"row", "env"},
        {"model", m.label},
        {"dir", absl::GetFlag(FLAGS_model)},
        {"gpu", prop.name},
        {"engine", (*engine)->device()},
        {"cuda_fast_paths", absl::GetFlag(FLAGS_cuda_fast_paths)},
        {"attention_kernel_env", std::getenv("GISTMEM_ATTENTION_KERNEL") != nullptr
                                     ? std::getenv("GISTMEM_ATTENTION_KERNEL")
                                     : ""},
        {"load_s", std::chrono::duration<double>(Clock::now() - load_start).count()},
        {"layers", m.config->num_layers},
        {"hidden", m.config->hidden_size},
        {"weight_bytes", m.weight_bytes},
        {"kv_bytes_per_entry", m.kv_bytes_per_entry},
        {"kv_pool_bytes", (*engine)->kv_pool().budget_bytes()},
        {"page_bytes", (*engine)->kv_pool().layout().page_bytes()},
        {"gist_token", m.gist_token},
        {"policy_params",
         {{"r", absl::GetFlag(FLAGS_ratio)},
          {"W", absl::GetFlag(FLAGS_window)},
          {"S", absl::GetFlag(FLAGS_sinks)}}}});
  CopyRate();
  const double budget = absl::GetFlag(FLAGS_budget_s);
  for (const std::string& row : Names(absl::GetFlag(FLAGS_rows))) {
    if (Elapsed() > budget) {
      Emit({{"part", "ours"}, {"row", row}, {"skipped", "budget"}});
      continue;
    }
    if (row == "decode") {
      DecodeRows(m);
    } else if (row == "batched") {
      BatchedRows(m);
    } else if (row == "prefill") {
      PrefillRows(m);
    } else if (row == "capacity") {
      CapacityRows(m, budget);
    } else {
      Emit(Error(row, absl::InvalidArgumentError("unknown row (decode, batched, prefill, "
                                                 "capacity)")));
    }
  }
  Emit({{"part", "ours"}, {"row", "done"}, {"model", m.label}});
  return 0;
}

}  // namespace
}  // namespace gistmem::bench

int main(int argc, char** argv) {
  gistmem::clients::HelpListsFlagsFrom("bench/gpu");
  absl::ParseCommandLine(argc, argv);
  return gistmem::bench::Main();
}
