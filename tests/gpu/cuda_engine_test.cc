// The CUDA engine against the CPU engine, both through model/engine.h only: the shipped model
// (models/gistmem-16k, trained with gist tokens) read by a memory::SessionMemory under every
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
#include "tests/gpu/engine_scripts.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/plain_sequence.h"

namespace gistmem::cuda {
namespace {

using testing::SkipWithoutGpu;

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

// The host tier: a sequence's pages parked in page-locked host memory leave the device pool,
// come back into other pages bit for bit, and read on with the same logits.
TEST_F(CudaEngineTest, ParkedPagesComeBackBitForBit) {
  std::mt19937 rng(47);
  const std::vector<int32_t> tokens = RandomTokens(70, cpu_->config().vocab_size, rng);
  std::vector<int64_t> positions(tokens.size());
  std::iota(positions.begin(), positions.end(), 0);
  model::PlainSequence sequence(*gpu_);
  sequence.Forward(tokens, positions);
  memory::SessionKv& kv = sequence.kv();
  memory::PageStorage& storage = gpu_->kv_pool().storage();
  const memory::PageLayout& layout = storage.layout();
  auto rows = [&] {
    std::vector<memory::SlotRef> slots;
    for (int32_t i = 0; i < kv.pinned().num_slots(); ++i)
      slots.push_back(kv.pinned().slot(i));
    std::vector<float> out(slots.size() * 2 * layout.num_layers * layout.kv_dim);
    storage.ExportRows(slots, out.data());
    return out;
  };
  const std::vector<int32_t> next = {tokens[5]};
  const std::vector<int64_t> next_position = {static_cast<int64_t>(tokens.size())};
  const std::vector<float> rows_before = rows();
  const std::vector<float> logits_before = sequence.Forward(next, next_position);
  sequence.Undo();  // the probe's entry goes again
  const std::vector<int32_t> pages_before = kv.pinned().pages();
  const int64_t in_use = gpu_->kv_pool().pages_in_use();

  ASSERT_OK(kv.Park());
  EXPECT_EQ(kv.parked_bytes(), static_cast<int64_t>(pages_before.size()) * layout.page_bytes());
  EXPECT_EQ(gpu_->kv_pool().pages_in_use(), in_use - static_cast<int64_t>(pages_before.size()));
  // Another sequence takes the freed pages and writes them.
  model::PlainSequence other(*gpu_);
  other.Forward(RandomTokens(70, cpu_->config().vocab_size, rng), positions);
  ASSERT_OK(kv.Unpark());
  EXPECT_NE(kv.pinned().pages(), pages_before);  // other pages, the same rows
  EXPECT_EQ(rows(), rows_before);
  EXPECT_EQ(sequence.Forward(next, next_position), logits_before);
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
