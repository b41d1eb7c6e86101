// Sampler: greedy and its tie rule, seeded reproducibility, the filters (top-k, top-p,
// repetition penalty) against hand-computed outcomes, parameter validation, and the empirical
// distribution at temperature 1 against the softmax.
#include "model/sampling.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace gistmem::model {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::vector<int32_t> kNoHistory;

SamplingParams Sampled(float temperature, uint64_t seed) {
  SamplingParams p;
  p.temperature = temperature;
  p.seed = seed;
  return p;
}

std::vector<float> RandomLogits(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.f, 3.f);
  std::vector<float> v(n);
  for (float& x : v)
    x = dist(rng);
  return v;
}

int32_t Argmax(const std::vector<float>& v) {
  int32_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[best]) best = static_cast<int32_t>(i);
  return best;
}

// Counts of each token id over `draws` samples.
std::vector<int> Histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i)
    ++counts.at(sampler.Sample(logits, kNoHistory));
  return counts;
}

TEST(SamplingTest, GreedyPicksTheArgmax) {
  Sampler sampler(SamplingParams{});  // temperature 0
  EXPECT_EQ(sampler.Sample(std::vector<float>{0.1f, 2.f, -1.f, 1.9f}, kNoHistory), 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-5.f, -3.f, -4.f}, kNoHistory), 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{7.f}, kNoHistory), 0);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = RandomLogits(500, seed);
    EXPECT_EQ(sampler.Sample(logits, kNoHistory), Argmax(logits)) << seed;
  }
}

TEST(SamplingTest, GreedyBreaksTiesTowardTheLowestId) {
  Sampler sampler(SamplingParams{});
  EXPECT_EQ(sampler.Sample(std::vector<float>{1.f, 3.f, 3.f, 2.f}, kNoHistory), 1);
  EXPECT_EQ(sampler.Sample(std::vector<float>{0.f, 0.f, 0.f}, kNoHistory), 0);
  EXPECT_EQ(sampler.Sample(std::vector<float>{-1.f, 5.f, 2.f, 5.f, 5.f}, kNoHistory), 1);
}

TEST(SamplingTest, GreedyIgnoresTheSeed) {
  const std::vector<float> logits = RandomLogits(100, 7);
  SamplingParams a, b;
  a.seed = 1;
  b.seed = 999;
  Sampler sa(a), sb(b);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(sa.Sample(logits, kNoHistory), sb.Sample(logits, kNoHistory));
}

TEST(SamplingTest, SameSeedSameTokens) {
  const std::vector<float> logits = RandomLogits(50, 1);
  for (uint64_t seed : {0ull, 42ull, 0xdeadbeefull}) {
    SamplingParams params = Sampled(1.f, seed);
    params.top_k = 20;
    params.top_p = 0.95f;
    Sampler first(params), second(params);
    std::vector<int32_t> a, b;
    for (int i = 0; i < 200; ++i) {
      a.push_back(first.Sample(logits, a));
      b.push_back(second.Sample(logits, b));
    }
    EXPECT_EQ(a, b) << "seed " << seed;
    EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 1u) << "not actually sampling";
  }
}

TEST(SamplingTest, DifferentSeedsGiveDifferentTokens) {
  const std::vector<float> logits(16, 0.f);  // uniform over 16 tokens
  Sampler one(Sampled(1.f, 1)), two(Sampled(1.f, 2));
  std::vector<int32_t> a, b;
  for (int i = 0; i < 100; ++i) {
    a.push_back(one.Sample(logits, kNoHistory));
    b.push_back(two.Sample(logits, kNoHistory));
  }
  EXPECT_NE(a, b);
  // And a sequence from one seed is not constant.
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 8u);
}

TEST(SamplingTest, TopKOneIsGreedy) {
  for (uint64_t seed = 0; seed < 30; ++seed) {
    const std::vector<float> logits = RandomLogits(200, 100 + seed);
    SamplingParams params = Sampled(1.5f, seed);
    params.top_k = 1;
    Sampler sampler(params);
    for (int i = 0; i < 20; ++i)
      ASSERT_EQ(sampler.Sample(logits, kNoHistory), Argmax(logits)) << "seed " << seed;
  }
}

TEST(SamplingTest, TinyTopPIsGreedy) {
  for (uint64_t seed = 0; seed < 30; ++seed) {
    const std::vector<float> logits = RandomLogits(200, 200 + seed);
    SamplingParams params = Sampled(1.f, seed);
    params.top_p = 1e-6f;
    Sampler sampler(params);
    for (int i = 0; i < 20; ++i)
      ASSERT_EQ(sampler.Sample(logits, kNoHistory), Argmax(logits)) << "seed " << seed;
  }
}

TEST(SamplingTest, TopKTwoNeverPicksTheThird) {
  // Softmax probabilities 0.4, 0.35, 0.25; top-2 renormalizes to 0.533, 0.467.
  const std::vector<float> logits = {std::log(0.4f), std::log(0.35f), std::log(0.25f)};
  SamplingParams params = Sampled(1.f, 5);
  params.top_k = 2;
  Sampler sampler(params);
  const int draws = 20000;
  const std::vector<int> counts = Histogram(sampler, logits, draws);
  EXPECT_EQ(counts[2], 0);
  EXPECT_NEAR(counts[0] / double(draws), 0.4 / 0.75, 0.015);
  EXPECT_NEAR(counts[1] / double(draws), 0.35 / 0.75, 0.015);
}

TEST(SamplingTest, TopKKeepsTheBestWhateverTheirIds) {
  // The two best are the last ids: top-k must sort by score, not take the first k ids.
  const std::vector<float> logits = {0.f, 0.1f, 0.2f, 5.f, 5.1f};
  SamplingParams params = Sampled(1.f, 6);
  params.top_k = 2;
  Sampler sampler(params);
  const std::vector<int> counts = Histogram(sampler, logits, 2000);
  EXPECT_EQ(counts[0] + counts[1] + counts[2], 0);
  EXPECT_GT(counts[3], 0);
  EXPECT_GT(counts[4], 0);
}

TEST(SamplingTest, TopPKeepsTheSmallestPrefixReachingTheMass) {
  // 0.3, 0.5, 0.2: top_p 0.75 keeps {1, 0} (0.8 >= 0.75), top_p 0.45 keeps {1} only.
  const std::vector<float> logits = {std::log(0.3f), std::log(0.5f), std::log(0.2f)};
  {
    SamplingParams params = Sampled(1.f, 7);
    params.top_p = 0.75f;
    Sampler sampler(params);
    const std::vector<int> counts = Histogram(sampler, logits, 20000);
    EXPECT_EQ(counts[2], 0);
    EXPECT_NEAR(counts[1] / 20000.0, 0.5 / 0.8, 0.015);
    EXPECT_NEAR(counts[0] / 20000.0, 0.3 / 0.8, 0.015);
  }
  {
    SamplingParams params = Sampled(1.f, 8);
    params.top_p = 0.45f;
    Sampler sampler(params);
    const std::vector<int> counts = Histogram(sampler, logits, 2000);
    EXPECT_EQ(counts[1], 2000);
  }
}

TEST(SamplingTest, RepetitionPenaltyDividesPositiveLogits) {
  SamplingParams params;  // greedy shows the penalized order
  params.repetition_penalty = 2.f;
  Sampler sampler(params);
  const std::vector<float> logits = {2.f, -1.f, 1.5f};
  EXPECT_EQ(sampler.Sample(logits, kNoHistory), 0);
  // 2 / 2 = 1 < 1.5.
  EXPECT_EQ(sampler.Sample(logits, std::vector<int32_t>{0}), 2);
  // Penalizing a token that is not the best changes nothing here.
  EXPECT_EQ(sampler.Sample(logits, std::vector<int32_t>{2}), 0);
}

TEST(SamplingTest, RepetitionPenaltyMultipliesNegativeLogits) {
  SamplingParams params;
  params.repetition_penalty = 2.f;
  Sampler sampler(params);
  const std::vector<float> logits = {-1.f, -1.5f};
  EXPECT_EQ(sampler.Sample(logits, kNoHistory), 0);
  // -1 * 2 = -2 < -1.5. (Dividing instead would give -0.5 and keep token 0.)
  EXPECT_EQ(sampler.Sample(logits, std::vector<int32_t>{0}), 1);
}

TEST(SamplingTest, RepetitionPenaltyAppliesOncePerDistinctToken) {
  SamplingParams params;
  params.repetition_penalty = 2.f;
  Sampler sampler(params);
  // Once: 2 / 2 = 1 > 0.9, token 0 stays best. Three times would give 0.25.
  const std::vector<float> logits = {2.f, 0.9f};
  EXPECT_EQ(sampler.Sample(logits, std::vector<int32_t>{0, 0, 0}), 0);
  // Negative side: once gives -2 > -2.5; three times would give -8.
  const std::vector<float> negative = {-1.f, -2.5f};
  EXPECT_EQ(sampler.Sample(negative, std::vector<int32_t>{0, 0, 0, 0}), 0);
}

TEST(SamplingTest, RepetitionPenaltyBelowOneFavoursRepeatsAndIgnoresStrangers) {
  SamplingParams params;
  params.repetition_penalty = 0.5f;
  Sampler sampler(params);
  const std::vector<float> logits = {2.f, 1.5f};
  EXPECT_EQ(sampler.Sample(logits, std::vector<int32_t>{1}), 1);  // 1.5 / 0.5 = 3
  // Ids outside the logits are ignored, not a crash.
  EXPECT_EQ(sampler.Sample(logits, std::vector<int32_t>{-1, 2, 1000}), 0);
}

TEST(SamplingTest, RepetitionPenaltyAlsoShapesSampling) {
  // Two equal logits; penalizing token 0 by 3 at temperature 1: p0 = e^(1/3) / (e^(1/3) + e).
  SamplingParams params = Sampled(1.f, 9);
  params.repetition_penalty = 3.f;
  Sampler sampler(params);
  const std::vector<float> logits = {1.f, 1.f};
  const std::vector<int32_t> history = {0};
  int zeros = 0;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i)
    zeros += sampler.Sample(logits, history) == 0;
  const double want = std::exp(1.0 / 3) / (std::exp(1.0 / 3) + std::exp(1.0));
  EXPECT_NEAR(zeros / double(draws), want, 0.015);
}

TEST(SamplingTest, EmpiricalFrequenciesMatchTheSoftmax) {
  // Temperature 1 on probabilities 0.5, 0.3, 0.2. Over 20000 draws the standard error is at
  // most 0.0036; 0.015 is four of them.
  const std::array<double, 3> p = {0.5, 0.3, 0.2};
  const std::vector<float> logits = {static_cast<float>(std::log(p[0])) + 3.f,
                                     static_cast<float>(std::log(p[1])) + 3.f,
                                     static_cast<float>(std::log(p[2])) + 3.f};
  for (uint64_t seed : {1ull, 2ull, 3ull}) {
    Sampler sampler(Sampled(1.f, seed));
    const int draws = 20000;
    const std::vector<int> counts = Histogram(sampler, logits, draws);
    for (int t = 0; t < 3; ++t)
      EXPECT_NEAR(counts[t] / double(draws), p[t], 0.015) << "seed " << seed << ", token " << t;
  }
}

TEST(SamplingTest, TemperatureSharpensAndFlattens) {
  // Probabilities 0.5, 0.3, 0.2 at temperature 0.5 become proportional to p^2.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  const double z = 0.25 + 0.09 + 0.04;
  Sampler sharp(Sampled(0.5f, 11));
  const std::vector<int> counts = Histogram(sharp, logits, 20000);
  EXPECT_NEAR(counts[0] / 20000.0, 0.25 / z, 0.015);
  EXPECT_NEAR(counts[1] / 20000.0, 0.09 / z, 0.015);
  EXPECT_NEAR(counts[2] / 20000.0, 0.04 / z, 0.015);
  // A huge temperature is nearly uniform.
  Sampler flat(Sampled(100.f, 12));
  const std::vector<int> flat_counts = Histogram(flat, logits, 20000);
  for (int t = 0; t < 3; ++t)
    EXPECT_NEAR(flat_counts[t] / 20000.0, 1.0 / 3, 0.015);
}

TEST(SamplingTest, MinusInfinityIsNeverSampled) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> logits = {-inf, 0.f, -inf, 0.f};
  Sampler sampler(Sampled(1.f, 13));
  const std::vector<int> counts = Histogram(sampler, logits, 2000);
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[2], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[3], 0);
}

TEST(SamplingTest, RejectsEmptyLogits) {
  Sampler greedy(SamplingParams{});
  EXPECT_THROW(greedy.Sample(std::vector<float>{}, kNoHistory), std::invalid_argument);
  Sampler sampled(Sampled(1.f, 1));
  EXPECT_THROW(sampled.Sample(std::vector<float>{}, kNoHistory), std::invalid_argument);
}

TEST(SamplingTest, TopKKeepsEveryTokenTiedWithTheKth) {
  // As transformers' TopKLogitsWarper: the filter is "score >= k-th best score".
  const std::vector<float> logits = {1.f, 0.f, 1.f, 1.f};
  SamplingParams params = Sampled(1.f, 14);
  params.top_k = 2;
  Sampler sampler(params);
  const std::vector<int> counts = Histogram(sampler, logits, 3000);
  EXPECT_EQ(counts[1], 0);
  for (int t : {0, 2, 3})
    EXPECT_GT(counts[t], 800) << t;
}

TEST(SamplingTest, TinyTemperatureIsGreedyWithoutOverflow) {
  const std::vector<float> logits = {30.f, 31.f, -50.f, 30.5f};
  Sampler sampler(Sampled(1e-30f, 15));
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(sampler.Sample(logits, kNoHistory), 1);
}

TEST(SamplingTest, RejectsNaNPlusInfinityAndAllMinusInfinity) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const SamplingParams& params : {SamplingParams{}, Sampled(1.f, 16)}) {
    Sampler sampler(params);
    EXPECT_THROW(sampler.Sample(std::vector<float>{0.f, nan}, kNoHistory), std::invalid_argument);
    EXPECT_THROW(sampler.Sample(std::vector<float>{0.f, inf}, kNoHistory), std::invalid_argument);
    EXPECT_THROW(sampler.Sample(std::vector<float>{-inf, -inf}, kNoHistory), std::invalid_argument);
  }
}

// What a backend sampling elsewhere relies on (cuda::DeviceSampler): a twin sampler's
// DrawUniform() gives the draws of Sample(), greedy rows draw none, and SampleWithUniform()
// with that draw picks Sample()'s token.
TEST(SamplingTest, DrawUniformAndSampleWithUniformReplaySample) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (const SamplingParams& p : {SamplingParams{.temperature = 0.8f, .top_k = 20, .seed = 9},
                                  SamplingParams{.temperature = 1.f, .top_p = 0.7f, .seed = 10},
                                  SamplingParams{.temperature = 0.f, .repetition_penalty = 1.5f},
                                  SamplingParams{.temperature = 1.5f, .seed = 11}}) {
    Sampler sampler(p), twin(p);
    for (int step = 0; step < 50; ++step) {
      std::vector<float> logits(300);
      for (float& v : logits)
        v = normal(rng);
      const std::vector<int32_t> previous = {3, 7, 7, 250};
      const double uniform = p.temperature == 0.f ? 0.0 : twin.DrawUniform();
      EXPECT_GE(uniform, 0.0);
      EXPECT_LT(uniform, 1.0);
      const int32_t token = sampler.Sample(logits, previous);
      EXPECT_EQ(SampleWithUniform(p, logits, previous, uniform), token) << step;
    }
  }
  EXPECT_THROW(SampleWithUniform({.top_p = 0.f}, std::vector<float>{1.f}, {}, 0.5),
               std::invalid_argument);
  EXPECT_THROW(SampleWithUniform({}, std::vector<float>{std::nanf("")}, {}, 0.5),
               std::invalid_argument);
}

TEST(SamplingValidateTest, DefaultsAreValid) {
  EXPECT_EQ(SamplingParams{}.Validate(), "");
  SamplingParams p = Sampled(0.7f, 3);
  p.top_k = 40;
  p.top_p = 0.9f;
  p.repetition_penalty = 1.1f;
  EXPECT_EQ(p.Validate(), "");
  p.temperature = 100.f;
  p.top_p = 1.f;
  EXPECT_EQ(p.Validate(), "");
}

TEST(SamplingValidateTest, EachFieldNamedInItsMessage) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    SamplingParams params;
    std::string field;
  };
  std::vector<Case> cases;
  for (float t : {-0.1f, 100.5f, nan, inf}) {
    SamplingParams p;
    p.temperature = t;
    cases.push_back({p, "temperature"});
  }
  {
    SamplingParams p;
    p.top_k = -1;
    cases.push_back({p, "top_k"});
  }
  for (float top_p : {0.f, -0.5f, 1.01f, nan}) {
    SamplingParams p;
    p.top_p = top_p;
    cases.push_back({p, "top_p"});
  }
  for (float penalty : {0.f, -1.f, inf, nan}) {
    SamplingParams p;
    p.repetition_penalty = penalty;
    cases.push_back({p, "repetition_penalty"});
  }
  for (const Case& c : cases) {
    const std::string message = c.params.Validate();
    EXPECT_THAT(message, StartsWith(c.field)) << message;
    EXPECT_THAT(message, HasSubstr("got")) << message;
    // The constructor refuses the same params with the same message.
    EXPECT_THAT([&] { Sampler sampler(c.params); },
                ::testing::ThrowsMessage<std::invalid_argument>(::testing::Eq(message)));
  }
}

TEST(SamplingValidateTest, MessagesStateTheAllowedRange) {
  SamplingParams p;
  p.temperature = -1.f;
  EXPECT_THAT(p.Validate(), HasSubstr("[0, 100]"));
  p = SamplingParams{};
  p.top_p = 2.f;
  EXPECT_THAT(p.Validate(), HasSubstr("(0, 1]"));
  p = SamplingParams{};
  p.top_k = -3;
  EXPECT_THAT(p.Validate(), HasSubstr(">= 0"));
  EXPECT_THAT(p.Validate(), HasSubstr("-3"));
  p = SamplingParams{};
  p.repetition_penalty = 0.f;
  EXPECT_THAT(p.Validate(), HasSubstr("> 0"));
}

}  // namespace
}  // namespace gistmem::model
