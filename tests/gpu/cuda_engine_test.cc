// The CUDA engine against the CPU engine, both through model/engine.h only: the shipped model
// (models/gistmem-tiny, trained with gist tokens) read by a memory::SessionMemory under every
// policy (full, window, pool, gist) with memory::ReadRows; a batch of sequences of very
// different lengths and policies in the same steps (prefill chunks beside decode rows); the
// device page storage's row export/import (bf16 <-> fp32), slot copies and means; loader errors.
//
// Tolerance (as cuda_transformer_test): the GPU keeps weights, K/V and GEMM inputs in bf16, so
// we require max |logit diff| <= 5e-2 of the row's largest |logit| and the same top-1 token on
// every row unless the CPU's top two are closer than that (a tie bf16 cannot resolve).
#include "model/backend/cuda/cuda_engine.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "memory/policy.h"
#include "memory/read_rows.h"
#include "memory/session_kv.h"
#include "memory/session_memory.h"
#include "model/backend/cuda/bf16.h"
#include "model/backend/cuda/device_page_storage.h"
#include "model/engine.h"
#include "model/gist_config.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/plain_sequence.h"

namespace gistmem::cuda {
namespace {

using memory::Policy;
using memory::PolicyKind;
using memory::RowPlan;
using memory::SessionMemory;
using model::LogitsMode;

constexpr double kTolerance = 5e-2;
constexpr int32_t kBlock = 16;

std::filesystem::path TinyModel() {
  if (const char* dir = std::getenv("GISTMEM_MODELS"))
    return std::filesystem::path(dir) / "gistmem-tiny";
  return std::filesystem::path(GISTMEM_SOURCE_DIR) / "models/gistmem-tiny";
}

// Without a GPU these tests skip (so `ctest -R Engine` on a build machine passes) unless
// GISTMEM_REQUIRE_GPU=1, which the GPU machine's run sets: there a missing GPU is a failure.
bool SkipWithoutGpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) return false;
  const char* require = std::getenv("GISTMEM_REQUIRE_GPU");
  return require == nullptr || std::string(require) != "1";
}

std::unique_ptr<model::Engine> LoadGpu(const std::filesystem::path& dir,
                                       int64_t kv_pool_bytes = int64_t{256} << 20) {
  absl::StatusOr<std::unique_ptr<model::Engine>> engine = model::LoadEngine(
      dir, {.device = "cuda", .kv_pool_bytes = kv_pool_bytes, .block_size = kBlock});
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// Worst row-relative error of `got` against the reference `want`; top-1 checked per row.
double CompareLogits(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab,
                     const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  for (size_t row = 0; (row + 1) * vocab <= std::min(got.size(), want.size()); ++row) {
    const float* g = &got[row * vocab];
    const float* w = &want[row * vocab];
    double diff = 0, scale = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      diff = std::max(diff, std::fabs(double(g[v]) - w[v]));
      scale = std::max(scale, std::fabs(double(w[v])));
    }
    worst = std::max(worst, diff / scale);
    const int64_t top_got = std::max_element(g, g + vocab) - g;
    const int64_t top_want = std::max_element(w, w + vocab) - w;
    std::vector<float> sorted(w, w + vocab);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
    const bool tie = sorted[0] - sorted[1] < kTolerance * scale;
    EXPECT_TRUE(top_got == top_want || tie)
        << what << " row " << row << ": top-1 " << top_got << " vs " << top_want;
  }
  EXPECT_LE(worst, kTolerance) << what;
  return worst;
}

std::vector<int32_t> RandomTokens(size_t count, int64_t vocab, std::mt19937& rng) {
  std::vector<int32_t> tokens(count);
  for (int32_t& t : tokens)
    t = static_cast<int32_t>(4 + rng() % (vocab - 4));  // past the special tokens
  return tokens;
}

Policy MakePolicy(PolicyKind kind, int32_t gist_token_id) {
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

Script MakeScript(const Policy& policy, std::vector<int32_t> raw, int64_t prefill_raw,
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
Reading ReadAlone(model::Engine& engine, const Script& script) {
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
std::vector<Reading> ReadBatched(model::Engine& engine, const std::vector<Script>& scripts) {
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

double CompareReadings(const Reading& got, const Reading& want, int64_t vocab,
                       const std::string& what) {
  EXPECT_EQ(got.logits.size(), want.logits.size()) << what;
  double worst = 0;
  for (size_t k = 0; k < std::min(got.logits.size(), want.logits.size()); ++k) {
    worst = std::max(worst, CompareLogits(got.logits[k], want.logits[k], vocab,
                                          what + " chunk " + std::to_string(k)));
  }
  // The policy did the same on both engines: the same entries kept, the same pages held.
  const memory::RetainedCounts a = got.memory->Counts(), b = want.memory->Counts();
  EXPECT_EQ(a.sink, b.sink) << what;
  EXPECT_EQ(a.raw, b.raw) << what;
  EXPECT_EQ(a.gist, b.gist) << what;
  EXPECT_EQ(a.pooled, b.pooled) << what;
  EXPECT_EQ(got.memory->kv().pages_held(), want.memory->kv().pages_held()) << what;
  std::printf("%-40s %zu chunks, max row-relative error %.3g\n", what.c_str(), got.logits.size(),
              worst);
  return worst;
}

class CudaEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (SkipWithoutGpu()) return;
    cpu_ = model::LoadCpu(TinyModel(), 4, kBlock).release();
    gpu_ = LoadGpu(TinyModel()).release();
  }
  static void TearDownTestSuite() {
    delete gpu_;
    delete cpu_;
    gpu_ = cpu_ = nullptr;
  }
  void SetUp() override {
    if (SkipWithoutGpu()) GTEST_SKIP() << "no CUDA GPU here (GISTMEM_REQUIRE_GPU=1 makes it fail)";
    ASSERT_NE(gpu_, nullptr);
    gist_token_id_ =
        model::GistConfig::FromModelDir(TinyModel(), cpu_->config().vocab_size)->gist_token_id;
  }

  static model::Engine* cpu_;
  static model::Engine* gpu_;
  int32_t gist_token_id_ = -1;
};
model::Engine* CudaEngineTest::cpu_ = nullptr;
model::Engine* CudaEngineTest::gpu_ = nullptr;

TEST_F(CudaEngineTest, IsTheGpuWithABf16PagePool) {
  EXPECT_EQ(gpu_->device(), "cuda:0");
  EXPECT_EQ(gpu_->config().num_layers, cpu_->config().num_layers);
  const memory::PageLayout& layout = gpu_->kv_pool().layout();
  EXPECT_EQ(layout.element_bytes, 2);
  EXPECT_EQ(layout.block_size, kBlock);
  EXPECT_EQ(layout.num_layers, gpu_->config().num_layers);
  EXPECT_EQ(layout.kv_dim, gpu_->config().kv_dim());
  EXPECT_EQ(gpu_->kv_pool().tier(), "gpu");
  EXPECT_EQ(gpu_->kv_pool().budget_bytes() / layout.page_bytes(),
            (int64_t{256} << 20) / layout.page_bytes());
}

TEST_F(CudaEngineTest, EveryPolicyMatchesTheCpuEngine) {
  std::mt19937 rng(17);
  for (PolicyKind kind :
       {PolicyKind::kFull, PolicyKind::kWindow, PolicyKind::kPool, PolicyKind::kGist}) {
    const Policy policy = MakePolicy(kind, gist_token_id_);
    ASSERT_TRUE(memory::Validate(policy).ok()) << memory::Describe(policy);
    const Script script = MakeScript(policy, RandomTokens(330, cpu_->config().vocab_size, rng), 300,
                                     96, cpu_->kv_pool());
    const Reading want = ReadAlone(*cpu_, script);
    const Reading got = ReadAlone(*gpu_, script);
    CompareReadings(got, want, cpu_->config().vocab_size, memory::Describe(policy));
  }
  EXPECT_EQ(gpu_->kv_pool().pages_in_use(), 0);
}

// Four sequences of very different lengths and policies in the same steps: a 1000-token full
// prefill in chunks of 128 beside a 3-token window sequence that is decoding from step 2 on, a
// gist sequence and a pool sequence (chunks of at most W = 64). Against each read alone on the
// CPU, and on the GPU.
TEST_F(CudaEngineTest, BatchesOfVeryDifferentLengthsMatchEachSequenceAlone) {
  std::mt19937 rng(23);
  const int64_t vocab = cpu_->config().vocab_size;
  std::vector<Script> scripts;
  scripts.push_back(MakeScript(MakePolicy(PolicyKind::kFull, gist_token_id_),
                               RandomTokens(1010, vocab, rng), 1000, 128, cpu_->kv_pool()));
  scripts.push_back(MakeScript(MakePolicy(PolicyKind::kWindow, gist_token_id_),
                               RandomTokens(40, vocab, rng), 3, 128, cpu_->kv_pool()));
  scripts.push_back(MakeScript(MakePolicy(PolicyKind::kGist, gist_token_id_),
                               RandomTokens(420, vocab, rng), 400, 128, cpu_->kv_pool()));
  scripts.push_back(MakeScript(MakePolicy(PolicyKind::kPool, gist_token_id_),
                               RandomTokens(200, vocab, rng), 150, 128, cpu_->kv_pool()));
  const std::vector<Reading> batched = ReadBatched(*gpu_, scripts);
  for (size_t s = 0; s < scripts.size(); ++s) {
    const std::string what = "batched " + memory::Describe(scripts[s].policy);
    CompareReadings(batched[s], ReadAlone(*cpu_, scripts[s]), vocab, what + " vs CPU");
    CompareReadings(batched[s], ReadAlone(*gpu_, scripts[s]), vocab, what + " vs GPU alone");
  }
}

// The page storage: rows out as fp32 and back in (bf16 on the device), slot copies, means.
TEST_F(CudaEngineTest, PageRowsExportImportCopyAndMean) {
  std::mt19937 rng(31);
  const std::vector<int32_t> tokens = RandomTokens(37, cpu_->config().vocab_size, rng);
  std::vector<int64_t> positions(tokens.size());
  std::iota(positions.begin(), positions.end(), 0);
  model::PlainSequence on_gpu(*gpu_), on_cpu(*cpu_);
  on_gpu.Forward(tokens, positions);
  on_cpu.Forward(tokens, positions);
  memory::PageStorage& storage = gpu_->kv_pool().storage();
  const memory::PageLayout& layout = storage.layout();
  std::vector<memory::SlotRef> slots, cpu_slots;
  for (int32_t i = 0; i < on_gpu.kv().pinned().num_slots(); ++i) {
    slots.push_back(on_gpu.kv().pinned().slot(i));
    cpu_slots.push_back(on_cpu.kv().pinned().slot(i));
  }
  const size_t row_count = slots.size() * 2 * layout.num_layers;
  std::vector<float> exported(row_count * layout.kv_dim), cpu_rows(exported.size());
  storage.ExportRows(slots, exported.data());
  cpu_->kv_pool().storage().ExportRows(cpu_slots, cpu_rows.data());
  // The GPU's K/V rows are the CPU's up to bf16 (relative to each row's largest element).
  double worst = 0;
  for (size_t row = 0; row < row_count; ++row) {
    double diff = 0, scale = 1e-6;
    for (int32_t i = 0; i < layout.kv_dim; ++i) {
      const size_t at = row * layout.kv_dim + i;
      diff = std::max(diff, std::fabs(double(exported[at]) - cpu_rows[at]));
      scale = std::max(scale, std::fabs(double(cpu_rows[at])));
    }
    worst = std::max(worst, diff / scale);
  }
  std::printf("K/V rows vs CPU: max row-relative error %.3g\n", worst);
  EXPECT_LE(worst, kTolerance);

  // Into a second sequence's pages and back: bit for bit (they are bf16 values already).
  memory::SessionKv copy(gpu_->kv_pool());
  std::vector<memory::SlotRef> copy_slots;
  for (int64_t p : positions) {
    absl::StatusOr<memory::SlotRef> slot =
        copy.Append(memory::SessionKv::Segment::kPinned, p, {}, {});
    ASSERT_OK(slot.status());
    copy_slots.push_back(*slot);
  }
  storage.ImportRows(copy_slots, exported.data());
  std::vector<float> again(exported.size());
  storage.ExportRows(copy_slots, again.data());
  EXPECT_EQ(again, exported);
  // The imported KV reads on like the original: the next token's logits agree.
  const std::vector<int32_t> next = {tokens[3]};
  const std::vector<int64_t> next_position = {static_cast<int64_t>(tokens.size())};
  const absl::StatusOr<std::vector<float>> original =
      model::ForwardPlain(*gpu_, on_gpu.kv(), next, next_position);
  const absl::StatusOr<std::vector<float>> imported =
      model::ForwardPlain(*gpu_, copy, next, next_position);
  ASSERT_OK(original.status());
  ASSERT_OK(imported.status());
  CompareLogits(*imported, *original, gpu_->config().vocab_size, "after import");

  // fp32 rows in are rounded to bf16 (nearest even).
  storage.ImportRows(copy_slots, cpu_rows.data());
  storage.ExportRows(copy_slots, again.data());
  size_t rounded_wrong = 0;
  for (size_t i = 0; i < cpu_rows.size(); ++i)
    rounded_wrong += again[i] != Bf16ToFloat(FloatToBf16(cpu_rows[i]));
  EXPECT_EQ(rounded_wrong, 0u);

  // CopySlots: slot 0..3 of the original onto slots 4..7 of the copy.
  const std::vector<memory::SlotRef> from(slots.begin(), slots.begin() + 4),
      to(copy_slots.begin() + 4, copy_slots.begin() + 8);
  storage.CopySlots(from, to);
  std::vector<float> a(4 * 2 * layout.num_layers * layout.kv_dim), b(a.size());
  storage.ExportRows(from, a.data());
  storage.ExportRows(to, b.data());
  EXPECT_EQ(a, b);

  // MeanOfSlots: the fp32 mean of four bf16 rows, summed in order, rounded once to bf16.
  const std::vector<memory::SlotRef> sources(slots.begin() + 10, slots.begin() + 14);
  storage.MeanOfSlots(sources, copy_slots[20]);
  std::vector<float> source_rows(a.size()), mean(a.size() / 4);
  storage.ExportRows(sources, source_rows.data());
  storage.ExportRows({&copy_slots[20], 1}, mean.data());
  size_t mean_wrong = 0;
  for (int32_t r = 0; r < 2 * layout.num_layers; ++r) {
    for (int32_t i = 0; i < layout.kv_dim; ++i) {
      float sum = 0;
      for (int32_t e = 0; e < 4; ++e)
        sum += source_rows[(size_t(r) * 4 + e) * layout.kv_dim + i];
      mean_wrong += mean[size_t(r) * layout.kv_dim + i] != Bf16ToFloat(FloatToBf16(sum * 0.25f));
    }
  }
  EXPECT_EQ(mean_wrong, 0u);
  // No CUDA failure was kept by the storage along the way.
  const auto* device_storage = dynamic_cast<const DevicePageStorage*>(&storage);
  ASSERT_NE(device_storage, nullptr);
  ASSERT_OK(device_storage->error());
}

TEST(CudaEngineLoad, ErrorsAreStatuses) {
  if (SkipWithoutGpu()) GTEST_SKIP() << "no CUDA GPU here (GISTMEM_REQUIRE_GPU=1 makes it fail)";
  EXPECT_EQ(model::LoadEngine(TinyModel(), {.device = "cuda:x"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model::LoadEngine(TinyModel(), {.device = "cuda:999"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model::LoadEngine(TinyModel(), {.device = "cuda", .block_size = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A KV budget no GPU has: RESOURCE_EXHAUSTED at load, not a crash.
  const absl::StatusOr<std::unique_ptr<model::Engine>> huge =
      model::LoadEngine(TinyModel(), {.device = "cuda", .kv_pool_bytes = int64_t{1} << 44});
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  // A bad token: INVALID_ARGUMENT, and the sequence is as it was.
  const std::unique_ptr<model::Engine> gpu = LoadGpu(TinyModel(), int64_t{16} << 20);
  ASSERT_NE(gpu, nullptr);
  memory::SessionKv kv(gpu->kv_pool());
  const std::vector<int32_t> bad = {1, static_cast<int32_t>(gpu->config().vocab_size)};
  const std::vector<int64_t> positions = {0, 1};
  EXPECT_EQ(model::ForwardPlain(*gpu, kv, bad, positions).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.pinned().num_slots(), 0);
}

}  // namespace
}  // namespace gistmem::cuda
