// The CUDA engine's ForwardSample (logits stay on the device, cuda::DeviceSampler picks, only
// tokens come back, sequences without a request skip the LM head) on the shipped model, as the
// scheduler drives it (tests/gpu/decode_driver.h): five sequences of every policy, greedy,
// greedy with a repetition penalty and seeded sampling with and without filters, prompts read
// in chunks beside other sequences' decode rows, sequences joining late, 40 tokens each.
//
//   - Against the host path on the same GPU (ForwardBatch's logits, then the CPU sampler with
//     the same draws), teacher-forced to the device's tokens: every pick is the same, except
//     where the host's logits put the pick within rounding of a tie (greedy: top two within
//     1e-4 of the row's scale, from a different LM-head shape) or the draw within 1e-9 of a
//     boundary (the device sums in parallel) -- at most 1 pick in 100.
//   - Against the CPU engine (fp32), teacher-forced alike: greedy picks agree unless the CPU's
//     top two are closer than the bf16 bound of the engine tests (5e-2 of the row's scale);
//     sampled picks are reported, not required (bf16 logits move the draw's boundaries).
//   - Bad requests are INVALID_ARGUMENT before anything is written; a step with no request
//     returns only once its K/V are in the pages.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "model/engine.h"
#include "model/gist_config.h"
#include "model/sampling.h"
#include "tests/gpu/decode_driver.h"
#include "tests/gpu/engine_scripts.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/plain_sequence.h"

namespace gistmem::cuda {
namespace {

using testing::SkipWithoutGpu;

// The two largest logits of a row and its scale (largest |logit|).
struct TopTwo {
  float first = 0, second = 0, scale = 0;
};
TopTwo TopTwoOf(std::span<const float> row) {
  std::vector<float> sorted(row.begin(), row.end());
  std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
  TopTwo t{sorted[0], sorted[1], 0};
  for (float v : row)
    t.scale = std::max(t.scale, std::fabs(v));
  return t;
}

// The host's pick would be `token` for a draw or logits within rounding of the real ones.
bool WithinRounding(const model::SamplingParams& p, std::span<const float> logits,
                    std::span<const int32_t> previous, double uniform, int32_t token) {
  if (p.temperature == 0.f) {
    const TopTwo t = TopTwoOf(logits);
    return t.first - t.second <= 1e-4 * t.scale;
  }
  for (const double u : {uniform * (1 - 1e-9), uniform * (1 + 1e-9) + 1e-300}) {
    if (u < 1 && model::SampleWithUniform(p, logits, previous, u) == token) return true;
  }
  return false;
}

class CudaEngineSampleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (SkipWithoutGpu()) return;
    cpu_ = model::LoadCpu(TinyModel(), 4, kBlock).release();
    // The device path under test, whatever the defaults are.
    gpu_ = LoadGpu(TinyModel(), int64_t{256} << 20, /*fast_paths=*/true).release();
  }
  static void TearDownTestSuite() {
    delete gpu_;
    delete cpu_;
    gpu_ = cpu_ = nullptr;
  }
  void SetUp() override {
    if (SkipWithoutGpu()) GTEST_SKIP() << "no CUDA GPU here (GISTMEM_REQUIRE_GPU=1 makes it fail)";
    ASSERT_NE(gpu_, nullptr);
  }

  std::vector<DecodeSpec> Specs() const {
    const int64_t vocab = cpu_->config().vocab_size;
    const int32_t gist = model::GistConfig::FromModelDir(TinyModel(), vocab)->gist_token_id;
    std::mt19937 rng(77);
    std::vector<DecodeSpec> specs;
    auto add = [&](PolicyKind kind, size_t prompt, model::SamplingParams p, int64_t first_step) {
      p.seed = 1000 + specs.size();
      specs.push_back({.policy = MakePolicy(kind, gist),
                       .prompt = RandomTokens(prompt, vocab, rng),
                       .params = p,
                       .new_tokens = 40,
                       .chunk = 48,
                       .first_step = first_step});
    };
    add(PolicyKind::kFull, 200, {.temperature = 0.f}, 0);
    add(PolicyKind::kGist, 150, {.temperature = 0.f, .repetition_penalty = 1.3f}, 0);
    add(PolicyKind::kWindow, 90,
        {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .repetition_penalty = 1.1f}, 2);
    add(PolicyKind::kPool, 130, {.temperature = 1.f}, 5);
    add(PolicyKind::kGist, 30, {.temperature = 0.7f, .top_p = 0.9f}, 9);
    return specs;
  }

  static model::Engine* cpu_;
  static model::Engine* gpu_;
};
model::Engine* CudaEngineSampleTest::cpu_ = nullptr;
model::Engine* CudaEngineSampleTest::gpu_ = nullptr;

TEST_F(CudaEngineSampleTest, DevicePicksAreTheHostSamplersOnTheSameLogits) {
  DecodeRun device(*gpu_, Specs(), Picking::kDevice);
  DecodeRun host(*gpu_, Specs(), Picking::kHost);  // the same engine, sessions of its own
  DecodeRun cpu(*cpu_, Specs(), Picking::kHost);
  int64_t picks = 0, rounding = 0, greedy = 0, greedy_cpu_ties = 0, sampled = 0,
          sampled_cpu_same = 0;
  while (!device.done()) {
    const absl::StatusOr<std::vector<int32_t>> got = device.Step();
    ASSERT_TRUE(got.ok()) << got.status();
    const absl::StatusOr<std::vector<int32_t>> want = host.Step(&*got);
    ASSERT_TRUE(want.ok()) << want.status();
    const absl::StatusOr<std::vector<int32_t>> reference = cpu.Step(&*got);
    ASSERT_TRUE(reference.ok()) << reference.status();
    for (size_t s = 0; s < device.size(); ++s) {
      const std::string what =
          "step " + std::to_string(device.steps()) + " sequence " + std::to_string(s);
      ASSERT_EQ((*got)[s] == DecodeRun::kNoPick, (*want)[s] == DecodeRun::kNoPick) << what;
      if ((*got)[s] == DecodeRun::kNoPick) continue;
      ++picks;
      const model::SamplingParams& p = device.spec(s).params;
      EXPECT_EQ(device.last_uniform(s), host.last_uniform(s)) << what;  // the same draws
      if ((*got)[s] != (*want)[s]) {
        std::vector<int32_t> previous = host.history(s);
        previous.pop_back();  // the history before this pick
        const bool explained =
            WithinRounding(p, host.last_logits(s), previous, host.last_uniform(s), (*got)[s]);
        rounding += explained;
        EXPECT_TRUE(explained) << what << ": device " << (*got)[s] << ", host " << (*want)[s];
      }
      if (p.temperature == 0.f) {
        ++greedy;
        if ((*got)[s] != (*reference)[s]) {
          const TopTwo t = TopTwoOf(cpu.last_logits(s));
          const bool tie = t.first - t.second < kTolerance * t.scale;
          greedy_cpu_ties += tie;
          EXPECT_TRUE(tie) << what << ": GPU " << (*got)[s] << ", CPU " << (*reference)[s];
        }
      } else {
        ++sampled;
        sampled_cpu_same += (*got)[s] == (*reference)[s];
      }
    }
  }
  std::printf(
      "%ld picks in %ld steps; vs host sampling on the GPU's logits: %ld within rounding; vs "
      "the CPU engine: %ld greedy (%ld at a bf16 tie), %ld sampled (%ld the same)\n",
      picks, device.steps(), rounding, greedy, greedy_cpu_ties, sampled, sampled_cpu_same);
  EXPECT_GT(greedy, 50);
  EXPECT_GT(sampled, 50);
  EXPECT_LE(rounding * 100, picks);
}

TEST_F(CudaEngineSampleTest, BadRequestsWriteNothing) {
  model::PlainSequence sequence(*gpu_);
  const std::vector<int32_t> tokens = {7, 8, 9};
  const std::vector<int64_t> positions = {0, 1, 2};
  const model::TokenRequest bad_draw{
      .params = {.temperature = 1.f}, .previous_tokens = {}, .uniform = 1.0};
  const model::TokenRequest greedy{};
  {
    const model::SequenceStep step = sequence.Reserve(tokens, positions);
    const model::TokenRequest* requests[] = {&bad_draw};
    EXPECT_EQ(gpu_->ForwardSample(std::span(&step, 1), requests).status().code(),
              absl::StatusCode::kInvalidArgument);
    sequence.Undo();
  }
  {
    const model::SequenceStep step = sequence.Reserve(tokens, positions, model::LogitsMode::kAll);
    const model::TokenRequest* requests[] = {&greedy};
    EXPECT_EQ(gpu_->ForwardSample(std::span(&step, 1), requests).status().code(),
              absl::StatusCode::kInvalidArgument);
    sequence.Undo();
  }
  // A step where nobody asks for a token runs no LM head and returns kNoToken.
  const model::SequenceStep step = sequence.Reserve(tokens, positions);
  const model::TokenRequest* none[] = {nullptr};
  const absl::StatusOr<std::vector<int32_t>> picked =
      gpu_->ForwardSample(std::span(&step, 1), none);
  ASSERT_TRUE(picked.ok()) << picked.status();
  EXPECT_EQ(*picked, std::vector<int32_t>{model::kNoToken});
  EXPECT_EQ(sequence.kv().pinned().num_slots(), 3);
}

// A step nobody asks a token from still returns only once its K/V are in the pages (the
// caller exports or pools them next, on the page storage's own stream).
TEST_F(CudaEngineSampleTest, AStepWithoutRequestsHasFinishedWhenItReturns) {
  std::mt19937 rng(8);
  const std::vector<int32_t> tokens = RandomTokens(400, cpu_->config().vocab_size, rng);
  std::vector<int64_t> positions(tokens.size());
  for (size_t i = 0; i < positions.size(); ++i)
    positions[i] = static_cast<int64_t>(i);
  model::PlainSequence without(*gpu_), with(*gpu_);
  const model::SequenceStep step = without.Reserve(tokens, positions);
  const model::TokenRequest* none[] = {nullptr};
  ASSERT_TRUE(gpu_->ForwardSample(std::span(&step, 1), none).ok());
  const std::vector<float> rows = without.keys(3);  // exported at once
  with.Forward(tokens, positions);
  EXPECT_EQ(rows, with.keys(3));
}

}  // namespace
}  // namespace gistmem::cuda
