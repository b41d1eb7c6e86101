// cuda::DeviceSampler against the CPU sampler (model/sampling.h) on the same logits: many
// random rows (vocab 8192 and 128256; Gaussian logits of several scales, bf16-rounded rows full
// of exact ties, rows with -inf entries, a row with one finite logit), every filter and their
// combinations, repetition penalty with repeated and out-of-range previous tokens. The device
// gets the uniform the CPU sampler draws (Sampler::DrawUniform on a twin seeded alike), so both
// must give the same token. Greedy rows must agree always. A sampled row may differ only at a
// rounding boundary (the device sums in parallel, the CPU in order, both in double): the test
// accepts a difference only when the CPU's own pick (SampleWithUniform) gives the device's token
// for a draw within 1e-9 of the real one or for top_p one float step away, and at most 1 row in
// 200 may take that exemption.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "model/backend/cuda/bf16.h"
#include "model/backend/cuda/device_sampler.h"
#include "model/sampling.h"
#include "tests/gpu/gpu_test_util.h"

namespace gistmem::cuda {
namespace {

using model::SamplingParams;

std::vector<SamplingParams> ParamSets() {
  std::vector<SamplingParams> sets = {
      {.temperature = 0.f},
      {.temperature = 0.f, .repetition_penalty = 1.3f},
      {.temperature = 1.f},
      {.temperature = 0.7f},
      {.temperature = 0.05f},
      {.temperature = 100.f},
      {.temperature = 1.f, .top_k = 1},
      {.temperature = 1.3f, .top_k = 50},
      {.temperature = 0.9f, .top_p = 0.9f},
      {.temperature = 1.f, .top_p = 0.3f},
      {.temperature = 1.f, .top_p = 1e-6f},
      {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .repetition_penalty = 1.2f},
      {.temperature = 1.f, .repetition_penalty = 0.7f},
      {.temperature = 2.f, .top_k = 1000000},  // k past the vocab: no filter
      {.temperature = 0.5f, .top_k = 3, .top_p = 0.5f},
  };
  for (size_t i = 0; i < sets.size(); ++i)
    sets[i].seed = 1234567 + 977 * i;
  return sets;
}

// Row r of a batch: a different kind of logits by r.
std::vector<float> MakeRow(int64_t vocab, int r, std::mt19937& rng) {
  const float scales[] = {1.f, 4.f, 12.f};
  std::vector<float> row = testing::RandomNormal(vocab, rng, scales[r % 3]);
  if (r % 4 == 1) {  // bf16 values: many exact ties, broken by id on both sides
    for (float& v : row)
      v = Bf16ToFloat(FloatToBf16(std::round(v * 4) / 4));
  }
  if (r % 5 == 2) {  // a fifth of the tokens masked out
    for (int64_t v = 0; v < vocab; v += 5)
      row[v] = -std::numeric_limits<float>::infinity();
  }
  if (r % 7 == 6) {  // one finite logit
    for (float& v : row)
      v = -std::numeric_limits<float>::infinity();
    row[rng() % vocab] = 0.5f;
  }
  if (r % 6 == 3) row[rng() % vocab] = -0.f;
  return row;
}

std::vector<int32_t> PreviousTokens(int64_t vocab, std::mt19937& rng) {
  std::vector<int32_t> previous;
  for (int i = 0; i < 60; ++i)
    previous.push_back(static_cast<int32_t>(rng() % vocab));
  previous.push_back(previous[3]);  // a repeat: penalized once
  previous.push_back(-1);           // outside the logits: ignored
  previous.push_back(static_cast<int32_t>(vocab + 7));
  return previous;
}

// The CPU's pick for a draw or a top_p just off the real one gives `token`: a boundary case.
bool AtBoundary(const SamplingParams& p, std::span<const float> logits,
                std::span<const int32_t> previous, double uniform, int32_t token) {
  for (const double u : {uniform * (1 - 1e-9), uniform * (1 + 1e-9) + 1e-300}) {
    if (u < 1 && model::SampleWithUniform(p, logits, previous, u) == token) return true;
  }
  for (const float top_p : {std::nextafter(p.top_p, 0.f), std::nextafter(p.top_p, 2.f)}) {
    if (p.top_p == 1.f || top_p > 1.f) continue;
    SamplingParams q = p;
    q.top_p = top_p;
    if (model::SampleWithUniform(q, logits, previous, uniform) == token) return true;
  }
  return false;
}

class DeviceSamplerTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { GISTMEM_SKIP_WITHOUT_GPU(); }
};

TEST_P(DeviceSamplerTest, GivesTheCpuSamplersToken) {
  const int64_t vocab = GetParam();
  const int rows = vocab > 10000 ? 12 : 32;
  std::mt19937 rng(static_cast<unsigned>(vocab));
  DeviceSampler sampler;
  int64_t sampled = 0, greedy = 0, boundary = 0;
  for (const SamplingParams& p : ParamSets()) {
    const std::string what = "T=" + std::to_string(p.temperature) +
                             " k=" + std::to_string(p.top_k) + " p=" + std::to_string(p.top_p) +
                             " penalty=" + std::to_string(p.repetition_penalty);
    SCOPED_TRACE(what);
    std::vector<float> logits;
    std::vector<std::vector<int32_t>> previous(rows);
    for (int r = 0; r < rows; ++r) {
      const std::vector<float> row = MakeRow(vocab, r, rng);
      logits.insert(logits.end(), row.begin(), row.end());
      previous[r] = PreviousTokens(vocab, rng);
    }
    // One session's sampler on the CPU; its twin gives the device the same draws.
    model::Sampler cpu(p), twin(p);
    std::vector<DeviceSampleRow> device_rows(rows);
    std::vector<int32_t> want(rows);
    for (int r = 0; r < rows; ++r) {
      const std::span<const float> row(logits.data() + r * vocab, vocab);
      want[r] = cpu.Sample(row, previous[r]);
      device_rows[r] = {.params = p,
                        .previous_tokens = previous[r],
                        .uniform = p.temperature == 0.f ? 0.0 : twin.DrawUniform()};
    }
    DeviceBuffer on_device = testing::Upload(logits);
    const absl::StatusOr<std::vector<int32_t>> got =
        sampler.Sample(on_device.as<float>(), vocab, device_rows);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      const std::span<const float> row(logits.data() + r * vocab, vocab);
      (p.temperature == 0.f ? greedy : sampled) += 1;
      if ((*got)[r] == want[r]) continue;
      const bool edge = p.temperature != 0.f &&
                        AtBoundary(p, row, previous[r], device_rows[r].uniform, (*got)[r]);
      boundary += edge;
      EXPECT_TRUE(edge) << "row " << r << ": device " << (*got)[r] << ", CPU " << want[r]
                        << ", uniform " << device_rows[r].uniform;
    }
  }
  std::printf("vocab %ld: %ld greedy rows, %ld sampled rows, %ld differed at a rounding boundary\n",
              vocab, greedy, sampled, boundary);
  EXPECT_LE(boundary * 200, sampled);
}

INSTANTIATE_TEST_SUITE_P(Vocabs, DeviceSamplerTest, ::testing::Values(8192, 128256));

TEST(DeviceSamplerErrors, BadRowsAndParamsAreInvalidArgument) {
  GISTMEM_SKIP_WITHOUT_GPU();
  const int64_t vocab = 100;
  DeviceSampler sampler;
  std::vector<float> logits(2 * vocab, 0.5f);
  const DeviceSampleRow greedy{.params = {}, .previous_tokens = {}, .uniform = 0};
  const std::vector<DeviceSampleRow> rows = {greedy, greedy};
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    logits[vocab + 7] = bad;
    DeviceBuffer d = testing::Upload(logits);
    EXPECT_EQ(sampler.Sample(d.as<float>(), vocab, rows).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
  DeviceBuffer none = testing::Upload(logits);
  EXPECT_EQ(sampler.Sample(none.as<float>(), vocab, rows).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::fill(logits.begin(), logits.end(), 1.f);
  logits[42] = 2.f;
  DeviceBuffer ok = testing::Upload(logits);
  DeviceSampleRow bad_params = greedy;
  bad_params.params.top_p = 0.f;
  EXPECT_EQ(sampler.Sample(ok.as<float>(), vocab, {&bad_params, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  DeviceSampleRow bad_draw{.params = {.temperature = 1.f}, .previous_tokens = {}, .uniform = 1.0};
  EXPECT_EQ(sampler.Sample(ok.as<float>(), vocab, {&bad_draw, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // After the errors the sampler still works: greedy picks the maximum.
  const absl::StatusOr<std::vector<int32_t>> picked = sampler.Sample(ok.as<float>(), vocab, rows);
  ASSERT_TRUE(picked.ok()) << picked.status();
  EXPECT_EQ(*picked, (std::vector<int32_t>{42, 0}));  // row 1: all equal, the lowest id
}

}  // namespace
}  // namespace gistmem::cuda
