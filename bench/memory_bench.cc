// gistmem-bench: what each memory policy keeps, stores and costs, for conversations of 1K to
// 32K raw tokens (issue 4's benchmark). For each policy and length it
//   1. reads the conversation into a SessionMemory in turns of --turn tokens, as the service
//      does, and adds up the bytes every turn's commit writes (service/memory_commit.h): what
//      the store keeps at the end, and what the cache holds;
//   2. times --timed_turns real forward turns (the --device engine) at that length: the rows
//      of step 1 are zeros (step 1 runs no model), which costs the same arithmetic.
// Then documents: compressing one with the model vs attaching it, and the memory of 10
// sessions sharing one copy vs each holding its own.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "clients/cpp/common/help_flags.h"
#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/device_choice.h"
#include "model/engine.h"
#include "service/memory_commit.h"

ABSL_FLAG(std::string, model, "models/gistmem-16k", "checkpoint directory");
ABSL_FLAG(std::string, lengths, "1024,2048,4096,8192,16384,32768", "raw tokens per conversation");
ABSL_FLAG(int64_t, turn, 256, "raw tokens per turn");
ABSL_FLAG(int64_t, timed_turns, 2, "forward turns timed at each length");
ABSL_FLAG(int64_t, ratio, 8, "r of pool and gist");
ABSL_FLAG(int64_t, window, 512, "W of window, pool and gist");
ABSL_FLAG(int64_t, sinks, 4, "S of window, pool and gist");
ABSL_FLAG(std::string, policies, "full,window,pool,gist",
          "policies measured (of full,window,pool,gist; always in that order)");
ABSL_FLAG(bool, documents, true, "also measure documents (compress once vs attach)");
ABSL_FLAG(int, threads, 0, "attention threads (0 = every core)");
ABSL_FLAG(std::string, device, "auto",
          "Engine to run the model on: cpu, cuda (cuda:N for GPU N) or auto: cuda when this "
          "binary has the CUDA backend and a CUDA device is present, else cpu");
ABSL_FLAG(int32_t, block_size, 16, "KV entries per page");

namespace gistmem::bench {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

template <typename T>
T OrDie(absl::StatusOr<T> value) {
  if (!value.ok()) {
    std::fprintf(stderr, "gistmem-bench: %s\n", value.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(value);
}

void OrDie(const absl::Status& status) {
  if (!status.ok()) OrDie(absl::StatusOr<int>(status));
}

// Appends the plan's rows to the memory without the model (their rows stay as the pages
// held them, which costs the same arithmetic later).
void ReadWithoutModel(memory::SessionMemory& memory, const memory::RowPlan& plan, int64_t chunk) {
  for (int64_t begin = 0; begin < plan.size(); begin += chunk) {
    const int64_t end = std::min(plan.size(), begin + chunk);
    OrDie(memory.Reserve(plan, begin, end));
    OrDie(memory.Applied(plan, begin, end));
  }
}

void ReadWithModel(model::Engine& engine, memory::SessionMemory& memory,
                   const memory::RowPlan& plan, int64_t chunk) {
  for (int64_t begin = 0; begin < plan.size(); begin += chunk) {
    const int64_t end = std::min(plan.size(), begin + chunk);
    OrDie(memory::ReadRows(engine, memory, plan, begin, end, model::LogitsMode::kLast));
  }
}

struct Row {
  std::string policy;
  int64_t raw = 0, stream = 0, retained = 0, cache_bytes = 0, wasted_bytes = 0, stored_bytes = 0;
  double turn_ms = 0, decode_ms = 0;
};

Row Measure(model::Engine& engine, const memory::Policy& policy, int64_t raw_tokens,
            std::mt19937& random) {
  const model::ModelConfig& config = engine.config();
  memory::SessionMemory memory(engine.kv_pool(), policy);
  std::uniform_int_distribution<int32_t> token(10, static_cast<int32_t>(config.vocab_size) - 1);
  const int64_t turn = absl::GetFlag(FLAGS_turn);
  const int64_t chunk = std::min<int64_t>(turn, memory::MaxChunkTokens(policy));
  int64_t stored = 0, window_bytes = 0;
  store::TurnCommit commit;
  for (int64_t read = 0; read < raw_tokens; read += turn) {
    std::vector<int32_t> tokens(std::min(turn, raw_tokens - read));
    for (int32_t& t : tokens)
      t = token(random);
    memory.BeginTurn();
    ReadWithoutModel(memory, memory.Plan(tokens), chunk);
    commit.new_kv_segments.clear();
    commit.deleted_kv_segments.clear();
    service::AddMemoryToCommit(config, memory, "bench", 0, commit);
    memory.EndTurn();
    for (const store::KvSegment& segment : commit.new_kv_segments) {
      if (segment.header.kind() == "window") {
        window_bytes = static_cast<int64_t>(segment.payload.size());
      } else {
        stored += static_cast<int64_t>(segment.payload.size());
      }
    }
  }
  Row row;
  row.policy = memory::Describe(policy);
  row.raw = raw_tokens;
  row.stream = memory.state().stream_tokens;
  row.retained = memory.Counts().total();
  row.cache_bytes = memory.Bytes();
  row.wasted_bytes = memory.WastedBytes();
  row.stored_bytes = stored + window_bytes;

  // Real forward turns at this length, then one decode step.
  const int64_t timed = absl::GetFlag(FLAGS_timed_turns);
  double total = 0;
  for (int64_t t = 0; t < timed; ++t) {
    std::vector<int32_t> tokens(turn);
    for (int32_t& x : tokens)
      x = token(random);
    const auto start = Clock::now();
    ReadWithModel(engine, memory, memory.Plan(tokens), chunk);
    total += Seconds(Clock::now() - start);
  }
  row.turn_ms = timed > 0 ? 1000 * total / static_cast<double>(timed) : 0;
  const int32_t one[] = {token(random)};
  const auto start = Clock::now();
  ReadWithModel(engine, memory, memory.Plan(one), 1);
  row.decode_ms = 1000 * Seconds(Clock::now() - start);
  return row;
}

void Documents(model::Engine& engine, const memory::Policy& policy) {
  std::mt19937 random(7);
  std::uniform_int_distribution<int32_t> token(
      10, static_cast<int32_t>(engine.config().vocab_size) - 1);
  std::vector<int32_t> text(1024);
  for (int32_t& t : text)
    t = token(random);
  memory::SessionMemory document(engine.kv_pool(), policy);
  auto start = Clock::now();
  ReadWithModel(engine, document, document.Plan(text), 256);
  const std::shared_ptr<const memory::FrozenKv> frozen = OrDie(document.Frozen());
  const double compress_ms = 1000 * Seconds(Clock::now() - start);

  std::vector<std::unique_ptr<memory::SessionMemory>> sessions;
  for (int i = 0; i < 10; ++i) {
    sessions.push_back(std::make_unique<memory::SessionMemory>(engine.kv_pool(), policy));
    const std::vector<int32_t> prompt(64, 11 + i);
    ReadWithModel(engine, *sessions.back(), sessions.back()->Plan(prompt), 64);
  }
  start = Clock::now();
  for (auto& s : sessions)
    s->Attach(frozen, "doc");
  const double attach_ms = 1000 * Seconds(Clock::now() - start) / 10;
  const int64_t doc_bytes = frozen->bytes();
  int64_t own = 0;
  for (const auto& s : sessions)
    own += s->Bytes();
  std::printf("\n## Documents (%s, 1024 tokens)\n\n", memory::Describe(policy).c_str());
  std::printf("| what | value |\n| --- | --- |\n");
  std::printf("| compress once (forward + freeze) | %.1f ms |\n", compress_ms);
  std::printf("| attach, per session | %.4f ms |\n", attach_ms);
  std::printf("| document entries kept / stream tokens | %ld / %ld |\n", frozen->size(),
              document.state().stream_tokens);
  std::printf(
      "| 10 sessions sharing one copy | %ld bytes (own caches %ld + document %ld, "
      "%ld holders) |\n",
      own + doc_bytes, own, doc_bytes, frozen.use_count() - 1);
  std::printf("| 10 sessions with a copy each | %ld bytes |\n", own + 10 * doc_bytes);
}

int Main() {
  std::string device = absl::GetFlag(FLAGS_device);
  if (device.empty() || device == "auto") {
    const model::DeviceChoice choice = model::DefaultDevice();
    std::fprintf(stderr, "--device auto: %s (%s)\n", choice.device.c_str(), choice.why.c_str());
    device = choice.device;
  }
  const std::unique_ptr<model::Engine> engine = OrDie(model::LoadEngine(
      absl::GetFlag(FLAGS_model), {.device = device,
                                   .num_threads = absl::GetFlag(FLAGS_threads),
                                   .kv_pool_bytes = int64_t{16} << 30,
                                   .block_size = absl::GetFlag(FLAGS_block_size)}));
  const int64_t r = absl::GetFlag(FLAGS_ratio), w = absl::GetFlag(FLAGS_window);
  const int64_t s = absl::GetFlag(FLAGS_sinks);
  const std::vector<memory::Policy> policies = {
      {},
      {.kind = memory::PolicyKind::kWindow,
       .ratio = 0,
       .window = w,
       .sink_tokens = s,
       .gist_token_id = -1},
      {.kind = memory::PolicyKind::kPool,
       .ratio = r,
       .window = w,
       .sink_tokens = s,
       .gist_token_id = -1},
      {.kind = memory::PolicyKind::kGist,
       .ratio = r,
       .window = w,
       .sink_tokens = s,
       .gist_token_id = 5},
  };
  std::printf("model %s: %ld layers, %ld kv heads x %ld dims; turns of %ld tokens\n\n",
              absl::GetFlag(FLAGS_model).c_str(), engine->config().num_layers,
              engine->config().num_kv_heads, engine->config().head_dim, absl::GetFlag(FLAGS_turn));
  std::printf(
      "| policy | raw tokens | stream | retained entries | cache bytes (pages) | of which page "
      "rounding | stored bytes | stored vs full | ms per %ld-token turn | ms per decode step |\n",
      absl::GetFlag(FLAGS_turn));
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  std::mt19937 random(1);
  const std::vector<std::string> lengths = absl::StrSplit(absl::GetFlag(FLAGS_lengths), ',');
  for (const std::string& length : lengths) {
    const int64_t n = std::stoll(length);
    int64_t full_stored = 0;
    for (const memory::Policy& policy : policies) {
      const std::vector<std::string> wanted = absl::StrSplit(absl::GetFlag(FLAGS_policies), ',');
      if (std::find(wanted.begin(), wanted.end(), memory::PolicyName(policy.kind)) == wanted.end())
        continue;
      const Row row = Measure(*engine, policy, n, random);
      if (policy.kind == memory::PolicyKind::kFull) full_stored = row.stored_bytes;
      std::printf("| %s | %ld | %ld | %ld | %ld | %ld | %ld | 1/%.2f | %.1f | %.2f |\n",
                  row.policy.c_str(), row.raw, row.stream, row.retained, row.cache_bytes,
                  row.wasted_bytes, row.stored_bytes,
                  static_cast<double>(full_stored) / row.stored_bytes, row.turn_ms, row.decode_ms);
      std::fflush(stdout);
    }
  }
  if (absl::GetFlag(FLAGS_documents)) Documents(*engine, policies[3]);
  return 0;
}

}  // namespace
}  // namespace gistmem::bench

int main(int argc, char** argv) {
  gistmem::clients::HelpListsFlagsFrom("bench/");
  absl::ParseCommandLine(argc, argv);
  return gistmem::bench::Main();
}
