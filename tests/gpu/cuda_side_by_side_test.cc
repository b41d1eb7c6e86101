// The same steps on the CPU engine and the CUDA engine, side by side, through
// memory::SessionMemory: every policy, batches of 1, 2, 8, 32 and 64 sequences whose lengths
// in one batch run from 1 to 2000 raw tokens (spread geometrically), each prefilled in chunks
// (the policy's limit, at most 256 rows) and then decoding 4 tokens, all of a batch in the same
// GPU steps (long prefills beside short sequences' decode rows). Each sequence read alone on
// the CPU is the reference. Reported per batch size and policy: the next-token (top-1)
// agreement over every step's last row, and the worst logit error.
//
// Tolerance: 5e-2 row-relative, the CUDA engine tests' bound (bf16 weights, K/V and GEMM inputs,
// fp32 accumulation); a top-1 difference only where the CPU's top two are within that bound.
// GISTMEM_TWIN_ON_CPU=1 runs the "GPU" side on a second CPU engine, so the scripts and checks
// can be tried on a machine without a GPU (the numbers are then exact).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "model/gist_config.h"
#include "tests/gpu/engine_scripts.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/plain_sequence.h"

namespace gistmem::cuda {
namespace {

bool TwinOnCpu() {
  const char* v = std::getenv("GISTMEM_TWIN_ON_CPU");
  return v != nullptr && std::string(v) == "1";
}

constexpr int64_t kMaxLength = 2000, kDecodeSteps = 4, kMaxChunk = 256;

// Raw lengths of a batch of `size`: 1 to kMaxLength, geometric (one sequence: the longest).
std::vector<int64_t> Lengths(int size) {
  std::vector<int64_t> lengths(size, kMaxLength);
  for (int s = 0; s < size && size > 1; ++s)
    lengths[s] = std::llround(std::pow(double(kMaxLength), double(s) / (size - 1)));
  return lengths;
}

class SideBySide : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (testing::SkipWithoutGpu() && !TwinOnCpu()) return;
    const int threads = std::max(2u, std::thread::hardware_concurrency());
    cpu_ = model::LoadCpu(TinyModel(), threads, kBlock).release();
    gpu_ = TwinOnCpu() ? model::LoadCpu(TinyModel(), threads, kBlock).release()
                       : LoadGpu(TinyModel(), int64_t{1} << 30).release();
  }
  static void TearDownTestSuite() {
    delete gpu_;
    delete cpu_;
    gpu_ = cpu_ = nullptr;
  }
  void SetUp() override {
    if (!TwinOnCpu()) GISTMEM_SKIP_WITHOUT_GPU();
    ASSERT_NE(gpu_, nullptr);
    gist_token_id_ =
        model::GistConfig::FromModelDir(TinyModel(), cpu_->config().vocab_size)->gist_token_id;
  }

  // One batch: sequence s gets policy kinds[(s + offset) % 4]; results added per policy.
  void RunBatch(int size, int offset, std::map<std::string, testing::LogitComparison>& by_policy) {
    const PolicyKind kinds[] = {PolicyKind::kFull, PolicyKind::kWindow, PolicyKind::kPool,
                                PolicyKind::kGist};
    const int64_t vocab = cpu_->config().vocab_size;
    std::vector<Script> scripts;
    for (const int64_t length : Lengths(size)) {
      const PolicyKind kind = kinds[(scripts.size() + offset) % 4];
      // A sequence's tokens depend on its policy and length only, so the long ones recur
      // across batches and their CPU reading is made once (CpuReading).
      std::mt19937 rng(static_cast<unsigned>(100003 * static_cast<int>(kind) + length));
      Script script = MakeScript(MakePolicy(kind, gist_token_id_),
                                 RandomTokens(length + kDecodeSteps, vocab, rng), length, kMaxChunk,
                                 cpu_->kv_pool());
      // Prefill chunks give their last row's logits only: the next token after the chunk.
      for (Chunk& c : script.chunks) {
        if (c.mode == LogitsMode::kAll) c.mode = LogitsMode::kLast;
      }
      scripts.push_back(std::move(script));
    }
    const std::vector<Reading> batched = ReadBatched(*gpu_, scripts);
    ASSERT_EQ(batched.size(), scripts.size());
    for (size_t s = 0; s < scripts.size(); ++s) {
      const std::string what = "batch " + std::to_string(size) + " seq " + std::to_string(s) +
                               " (" + std::to_string(scripts[s].raw.size()) + " raw) " +
                               memory::Describe(scripts[s].policy);
      const testing::LogitComparison c =
          CompareReadings(batched[s], CpuReading(scripts[s]), vocab, what, /*quiet=*/true);
      by_policy[memory::Describe(scripts[s].policy)].Add(c);
    }
  }

  // The script read alone on the CPU; the longest scripts recur (one per policy) and are kept.
  const Reading& CpuReading(const Script& script) {
    const auto key = std::make_pair(static_cast<int>(script.policy.kind), script.raw.size());
    if (auto it = cpu_cache_.find(key); it != cpu_cache_.end()) return it->second;
    if (static_cast<int64_t>(script.raw.size()) != kMaxLength + kDecodeSteps) {
      last_ = ReadAlone(*cpu_, script);
      return last_;
    }
    return cpu_cache_.emplace(key, ReadAlone(*cpu_, script)).first->second;
  }
  void TearDown() override { cpu_cache_.clear(); }

  std::map<std::pair<int, size_t>, Reading> cpu_cache_;
  Reading last_;
  static model::Engine* cpu_;
  static model::Engine* gpu_;
  int32_t gist_token_id_ = -1;
};
model::Engine* SideBySide::cpu_ = nullptr;
model::Engine* SideBySide::gpu_ = nullptr;

TEST_F(SideBySide, EveryPolicyAndBatchSizeAgreesWithTheCpu) {
  testing::LogitComparison total;
  for (const int size : {1, 2, 8, 32, 64}) {
    std::map<std::string, testing::LogitComparison> by_policy;
    // Small batches hold fewer than four sequences: run them once per policy offset, so that
    // every policy is seen at every batch size.
    for (int offset = 0; offset < (size < 4 ? 4 : 1); ++offset)
      RunBatch(size, offset, by_policy);
    for (const auto& [policy, c] : by_policy) {
      std::printf(
          "batch %2d %-32s next token same %4ld/%-4ld ties %ld, max row-relative error %.3g\n",
          size, policy.c_str(), c.top1_same, c.rows, c.ties, c.worst);
      total.Add(c);
    }
    std::fflush(stdout);  // a run cut short by its timeout still shows the batches done
    EXPECT_EQ(by_policy.size(), 4u) << "batch " << size;
    EXPECT_EQ(gpu_->kv_pool().pages_in_use(), 0) << "batch " << size << " left pages behind";
  }
  std::printf("all: next token same %ld/%ld (ties %ld), max row-relative error %.3g\n",
              total.top1_same, total.rows, total.ties, total.worst);
  EXPECT_GE(total.rows, 800);  // 871 steps' last rows: every script was read
  EXPECT_LE(total.worst, kTolerance);
}

}  // namespace
}  // namespace gistmem::cuda
