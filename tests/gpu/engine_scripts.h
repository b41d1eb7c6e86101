// Engine scripts for the GPU tests: sequences read through memory::SessionMemory and
// memory::ReadRows under a policy, alone or batched with others (prefill chunks beside decode
// rows), on any model::Engine; their logits compared chunk by chunk, and the policy's effect
// (entries kept, pages held) compared between two readings.
#pragma once

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "memory/policy.h"
#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/engine.h"
#include "tests/gpu/gpu_test_util.h"

namespace gistmem::cuda {

using memory::Policy;
using memory::PolicyKind;
using memory::RowPlan;
using memory::SessionMemory;
using model::LogitsMode;

// The engine tests' bound: the GPU keeps weights, K/V and GEMM inputs in bf16 (see the tests).
constexpr double kTolerance = 5e-2;
constexpr int32_t kBlock = 16;

inline std::filesystem::path TinyModel() {
  return testing::SourceRoot() / "models/gistmem-16k";
}

// fast_paths: model::SetCudaFastPaths (GISTMEM_CUDA_FAST_PATHS, when set, overrides it).
inline std::unique_ptr<model::Engine> LoadGpu(const std::filesystem::path& dir,
                                              int64_t kv_pool_bytes = int64_t{256} << 20,
                                              bool fast_paths = model::kCudaFastPathsByDefault) {
  model::EngineOptions options{
      .device = "cuda", .kv_pool_bytes = kv_pool_bytes, .block_size = kBlock};
  model::SetCudaFastPaths(options, fast_paths);
  absl::StatusOr<std::unique_ptr<model::Engine>> engine = model::LoadEngine(dir, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// The engine tests' comparison: bound kTolerance, a top-1 flip only where the reference's top
// two are within that bound (see the file comments of the tests that use it).
inline testing::LogitComparison CompareLogits(const std::vector<float>& got,
                                              const std::vector<float>& want, int64_t vocab,
                                              const std::string& what) {
  return testing::CompareLogits(got, want, vocab, what, kTolerance, kTolerance);
}

inline std::vector<int32_t> RandomTokens(size_t count, int64_t vocab, std::mt19937& rng) {
  std::vector<int32_t> tokens(count);
  for (int32_t& t : tokens)
    t = static_cast<int32_t>(4 + rng() % (vocab - 4));  // past the special tokens
  return tokens;
}

inline Policy MakePolicy(PolicyKind kind, int32_t gist_token_id) {
  switch (kind) {
    case PolicyKind::kFull:
      return {.kind = PolicyKind::kFull};
    case PolicyKind::kWindow:
      return {.kind = PolicyKind::kWindow, .window = 64, .sink_tokens = 4};
    case PolicyKind::kPool:
      return {.kind = PolicyKind::kPool, .ratio = 8, .window = 64, .sink_tokens = 4};
    case PolicyKind::kGist:
      return {.kind = PolicyKind::kGist,
              .ratio = 8,
              .window = 64,
              .sink_tokens = 4,
              .gist_token_id = gist_token_id};
  }
  return {};
}

// One chunk of a sequence's schedule: rows [begin, end) of its plan.
struct Chunk {
  int64_t begin = 0, end = 0;
  LogitsMode mode = LogitsMode::kAll;
};

// A sequence: its policy, its raw tokens, and the chunks it is read in: the rows of the first
// `prefill_raw` raw tokens in chunks of at most `max_chunk` rows (and the policy's limit), all
// logits; then one raw token (and the gist after it, if any) per chunk, that token's logits.
struct Script {
  Policy policy;
  std::vector<int32_t> raw;
  std::vector<Chunk> chunks;
};

inline Script MakeScript(const Policy& policy, std::vector<int32_t> raw, int64_t prefill_raw,
                         int64_t max_chunk, memory::BlockPool& pool) {
  Script script{.policy = policy, .raw = std::move(raw), .chunks = {}};
  const RowPlan plan = SessionMemory(pool, policy).Plan(script.raw);
  max_chunk = std::min(max_chunk, memory::MaxChunkTokens(policy));
  // Rows up to and including raw token `prefill_raw - 1` and the gist after it.
  int64_t raw_seen = 0, prefill_rows = 0;
  while (prefill_rows < plan.size() && raw_seen < prefill_raw) {
    if (plan.entries[prefill_rows].kind != memory::EntryKind::kGist) ++raw_seen;
    ++prefill_rows;
  }
  while (prefill_rows < plan.size() && plan.entries[prefill_rows].kind == memory::EntryKind::kGist)
    ++prefill_rows;
  for (int64_t begin = 0; begin < prefill_rows; begin += max_chunk)
    script.chunks.push_back({begin, std::min(prefill_rows, begin + max_chunk), LogitsMode::kAll});
  for (int64_t begin = prefill_rows; begin < plan.size();) {
    int64_t end = begin + 1;
    while (end < plan.size() && plan.entries[end].kind == memory::EntryKind::kGist)
      ++end;
    script.chunks.push_back({begin, end, LogitsMode::kRow});  // row 0: the raw token
    begin = end;
  }
  return script;
}

struct Reading {
  std::unique_ptr<SessionMemory> memory;
  RowPlan plan;
  std::vector<std::vector<float>> logits;  // per chunk
};

// Reads one script alone with memory::ReadRows.
inline Reading ReadAlone(model::Engine& engine, const Script& script) {
  Reading r;
  r.memory = std::make_unique<SessionMemory>(engine.kv_pool(), script.policy);
  r.plan = r.memory->Plan(script.raw);
  for (const Chunk& c : script.chunks) {
    absl::StatusOr<std::vector<float>> logits =
        memory::ReadRows(engine, *r.memory, r.plan, c.begin, c.end, c.mode);
    EXPECT_TRUE(logits.ok()) << engine.device() << ": " << logits.status();
    r.logits.push_back(logits.ok() ? *std::move(logits) : std::vector<float>());
  }
  return r;
}

// Reads all scripts together: step k runs chunk k of every script that has one.
inline std::vector<Reading> ReadBatched(model::Engine& engine, const std::vector<Script>& scripts) {
  std::vector<Reading> readings(scripts.size());
  size_t steps = 0;
  for (size_t s = 0; s < scripts.size(); ++s) {
    readings[s].memory = std::make_unique<SessionMemory>(engine.kv_pool(), scripts[s].policy);
    readings[s].plan = readings[s].memory->Plan(scripts[s].raw);
    steps = std::max(steps, scripts[s].chunks.size());
  }
  for (size_t k = 0; k < steps; ++k) {
    std::vector<size_t> which;
    std::vector<std::vector<memory::SlotRef>> slots;
    std::vector<model::SequenceStep> batch;
    for (size_t s = 0; s < scripts.size(); ++s) {
      if (k >= scripts[s].chunks.size()) continue;
      const Chunk& c = scripts[s].chunks[k];
      Reading& r = readings[s];
      absl::StatusOr<std::vector<memory::SlotRef>> reserved =
          r.memory->Reserve(r.plan, c.begin, c.end);
      EXPECT_TRUE(reserved.ok()) << reserved.status();
      if (!reserved.ok()) return readings;
      which.push_back(s);
      slots.push_back(*std::move(reserved));
    }
    for (size_t i = 0; i < which.size(); ++i) {
      const Chunk& c = scripts[which[i]].chunks[k];
      const RowPlan& plan = readings[which[i]].plan;
      auto part = [&](const auto& rows) {
        return std::span(rows).subspan(c.begin, c.end - c.begin);
      };
      batch.push_back({.tokens = part(plan.tokens),
                       .positions = part(plan.positions),
                       .clocks = part(plan.clocks),
                       .slots = slots[i],
                       .kv = &readings[which[i]].memory->kv(),
                       .mode = c.mode,
                       .logits_row = 0});
    }
    absl::StatusOr<std::vector<std::vector<float>>> logits = engine.ForwardBatch(batch);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return readings;
    for (size_t i = 0; i < which.size(); ++i) {
      const Chunk& c = scripts[which[i]].chunks[k];
      Reading& r = readings[which[i]];
      EXPECT_TRUE(r.memory->Applied(r.plan, c.begin, c.end).ok());
      r.logits.push_back(std::move((*logits)[i]));
    }
  }
  return readings;
}

// Compares two readings of one script chunk by chunk (CompareLogits) and the policy's effect
// on each (entries kept, pages held: equal). Prints one line unless `quiet`.
inline testing::LogitComparison CompareReadings(const Reading& got, const Reading& want,
                                                int64_t vocab, const std::string& what,
                                                bool quiet = false) {
  EXPECT_EQ(got.logits.size(), want.logits.size()) << what;
  testing::LogitComparison all;
  for (size_t k = 0; k < std::min(got.logits.size(), want.logits.size()); ++k)
    all.Add(
        CompareLogits(got.logits[k], want.logits[k], vocab, what + " chunk " + std::to_string(k)));
  // The policy did the same on both engines: the same entries kept, the same pages held.
  const memory::RetainedCounts a = got.memory->Counts(), b = want.memory->Counts();
  EXPECT_EQ(a.sink, b.sink) << what;
  EXPECT_EQ(a.raw, b.raw) << what;
  EXPECT_EQ(a.gist, b.gist) << what;
  EXPECT_EQ(a.pooled, b.pooled) << what;
  EXPECT_EQ(got.memory->kv().pages_held(), want.memory->kv().pages_held()) << what;
  if (!quiet) {
    std::printf("%-40s %zu chunks, max row-relative error %.3g, top-1 same %ld/%ld\n", what.c_str(),
                got.logits.size(), all.worst, all.top1_same, all.rows);
  }
  return all;
}

}  // namespace gistmem::cuda
