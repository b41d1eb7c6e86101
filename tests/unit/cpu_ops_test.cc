// The CPU reference kernels against plain double-precision loops on random data, and the
// thread pool's ParallelFor contract (every index exactly once, returning when all are done).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#include "model/backend/cpu/ops.h"
#include "model/backend/cpu/thread_pool.h"

namespace gistmem::model {
namespace {

std::vector<float> Random(size_t count, std::mt19937& rng, float scale = 1.f) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> values(count);
  for (float& v : values)
    v = normal(rng);
  return values;
}

TEST(RmsNorm, MatchesDoubleFormula) {
  std::mt19937 rng(1);
  const int64_t rows = 5, dim = 301;
  const float eps = 1e-5f;
  const std::vector<float> x = Random(rows * dim, rng, 3.f);
  const std::vector<float> weight = Random(dim, rng);
  std::vector<float> out(rows * dim);
  RmsNorm(x.data(), weight.data(), out.data(), rows, dim, eps);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i)
      sum += double(x[r * dim + i]) * x[r * dim + i];
    const double scale = 1.0 / std::sqrt(sum / dim + eps);
    for (int64_t i = 0; i < dim; ++i) {
      const double expected = x[r * dim + i] * scale * weight[i];
      EXPECT_NEAR(out[r * dim + i], expected, 1e-5 * (1 + std::abs(expected)));
    }
  }
}

TEST(RmsNorm, OutputMayAliasInput) {
  std::mt19937 rng(2);
  const int64_t rows = 3, dim = 64;
  std::vector<float> x = Random(rows * dim, rng);
  const std::vector<float> weight = Random(dim, rng);
  std::vector<float> expected(rows * dim);
  RmsNorm(x.data(), weight.data(), expected.data(), rows, dim, 1e-6f);
  RmsNorm(x.data(), weight.data(), x.data(), rows, dim, 1e-6f);
  EXPECT_EQ(x, expected);
}

TEST(RmsNorm, EpsilonKeepsZeroRowsFinite) {
  const std::vector<float> x(8, 0.f), weight(8, 1.f);
  std::vector<float> out(8, 1.f);
  RmsNorm(x.data(), weight.data(), out.data(), 1, 8, 1e-6f);
  for (float v : out)
    EXPECT_EQ(v, 0.f);
}

TEST(Linear, MatchesNaiveLoopsWithAndWithoutBias) {
  std::mt19937 rng(3);
  for (const auto& [rows, in_dim, out_dim] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 17, 9}, {7, 33, 65}, {64, 128, 48}}) {
    const std::vector<float> x = Random(rows * in_dim, rng);
    const std::vector<float> w = Random(out_dim * in_dim, rng);
    const std::vector<float> bias = Random(out_dim, rng);
    std::vector<float> plain(rows * out_dim), biased(rows * out_dim);
    Linear(x.data(), w.data(), nullptr, plain.data(), rows, in_dim, out_dim);
    Linear(x.data(), w.data(), bias.data(), biased.data(), rows, in_dim, out_dim);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < out_dim; ++o) {
        double expected = 0;
        for (int64_t i = 0; i < in_dim; ++i)
          expected += double(x[r * in_dim + i]) * w[o * in_dim + i];
        EXPECT_NEAR(plain[r * out_dim + o], expected, 1e-4) << rows << "x" << in_dim;
        EXPECT_NEAR(biased[r * out_dim + o], expected + bias[o], 1e-4) << rows << "x" << in_dim;
      }
    }
  }
}

TEST(Linear, ZeroRowsIsANoOp) {
  const std::vector<float> w(4, 1.f);
  Linear(nullptr, w.data(), nullptr, nullptr, 0, 2, 2);
}

std::vector<float> InverseFrequencies(int64_t head_dim, double theta) {
  std::vector<float> inv_freq;
  for (int64_t i = 0; i < head_dim / 2; ++i)
    inv_freq.push_back(static_cast<float>(1.0 / std::pow(theta, double(2 * i) / head_dim)));
  return inv_freq;
}

double HeadDot(const std::vector<float>& a, const std::vector<float>& b, int64_t head,
               int64_t head_dim) {
  double dot = 0;
  for (int64_t d = 0; d < head_dim; ++d)
    dot += double(a[head * head_dim + d]) * b[head * head_dim + d];
  return dot;
}

TEST(ApplyRope, DotProductDependsOnlyOnRelativePosition) {
  std::mt19937 rng(4);
  const int64_t heads = 3, head_dim = 16;
  const std::vector<float> inv_freq = InverseFrequencies(head_dim, 10000.0);
  const std::vector<float> q = Random(heads * head_dim, rng);
  const std::vector<float> k = Random(heads * head_dim, rng);
  auto rotated_dot = [&](int64_t p, int64_t s, int64_t head) {
    std::vector<float> rq = q, rk = k;
    const int64_t qp[] = {p}, kp[] = {s};
    ApplyRope(rq.data(), qp, heads, head_dim, inv_freq);
    ApplyRope(rk.data(), kp, heads, head_dim, inv_freq);
    return HeadDot(rq, rk, head, head_dim);
  };
  for (int64_t head = 0; head < heads; ++head) {
    const double base = rotated_dot(7, 3, head);
    EXPECT_NEAR(rotated_dot(104, 100, head), base, 1e-3);
    EXPECT_NEAR(rotated_dot(1004, 1000, head), base, 2e-3);
    // Different offsets give different products (the rotation is not trivial).
    EXPECT_GT(std::abs(rotated_dot(9, 3, head) - base), 1e-3);
  }
}

TEST(ApplyRope, PositionZeroIsIdentityAndNormsArePreserved) {
  std::mt19937 rng(5);
  const int64_t heads = 2, head_dim = 8;
  const std::vector<float> inv_freq = InverseFrequencies(head_dim, 500000.0);
  const std::vector<float> x = Random(2 * heads * head_dim, rng);
  std::vector<float> rotated = x;
  const int64_t positions[] = {0, 37};
  ApplyRope(rotated.data(), positions, heads, head_dim, inv_freq);
  for (int64_t i = 0; i < heads * head_dim; ++i)
    EXPECT_EQ(rotated[i], x[i]);
  for (int64_t head = 2; head < 4; ++head) {  // the second row's heads
    EXPECT_NEAR(HeadDot(rotated, rotated, head, head_dim), HeadDot(x, x, head, head_dim), 1e-4);
  }
}

TEST(ApplyRope, RotatesHalvesNotNeighbours) {
  // head_dim 4: pairs are (0, 2) and (1, 3). With inv_freq {pi/2, 0} at position 1 the first
  // pair turns by 90 degrees and the second stays put.
  const std::vector<float> inv_freq = {static_cast<float>(M_PI / 2), 0.f};
  std::vector<float> x = {1.f, 2.f, 3.f, 4.f};
  const int64_t positions[] = {1};
  ApplyRope(x.data(), positions, 1, 4, inv_freq);
  EXPECT_NEAR(x[0], -3.f, 1e-6);  // x0 cos - x2 sin
  EXPECT_NEAR(x[2], 1.f, 1e-6);   // x2 cos + x0 sin
  EXPECT_FLOAT_EQ(x[1], 2.f);
  EXPECT_FLOAT_EQ(x[3], 4.f);
}

TEST(SiluMul, MatchesFormula) {
  std::vector<float> gate = {-20.f, -1.f, 0.f, 0.5f, 3.f, 90.f};
  const std::vector<float> up = {2.f, 3.f, 4.f, -1.f, 0.5f, 1.f};
  const std::vector<float> original = gate;
  SiluMul(gate.data(), up.data(), static_cast<int64_t>(gate.size()));
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = original[i];
    EXPECT_NEAR(gate[i], g / (1 + std::exp(-g)) * up[i], 1e-5 * (1 + std::abs(g)));
  }
}

TEST(Softmax, MatchesDoubleFormulaAndIsStableForLargeValues) {
  std::vector<float> values = {1000.f, 999.f, 998.5f, -1000.f};
  const std::vector<float> original = values;
  Softmax(values.data(), 4);
  double sum = 0;
  for (float v : original)
    sum += std::exp(double(v) - 1000.0);
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_NEAR(values[i], std::exp(double(original[i]) - 1000.0) / sum, 1e-6);
}

TEST(Softmax, MaskedEntriesGetZeroAndAllMaskedGivesZeros) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> values = {0.f, -inf, 0.f};
  Softmax(values.data(), 3);
  EXPECT_FLOAT_EQ(values[0], 0.5f);
  EXPECT_EQ(values[1], 0.f);
  EXPECT_FLOAT_EQ(values[2], 0.5f);
  std::vector<float> none = {-inf, -inf};
  Softmax(none.data(), 2);
  EXPECT_EQ(none, std::vector<float>({0.f, 0.f}));
}

TEST(Dot, MatchesNaiveSumForEveryTailLength) {
  std::mt19937 rng(6);
  for (int64_t n = 0; n <= 37; ++n) {
    const std::vector<float> a = Random(n, rng), b = Random(n, rng);
    double expected = 0;
    for (int64_t i = 0; i < n; ++i)
      expected += double(a[i]) * b[i];
    EXPECT_NEAR(Dot(a.data(), b.data(), n), expected, 1e-5) << n;
  }
}

// One head's attention as the CPU engine forms it: Dot and Softmax for the weights, then
// WeightedSum over rows reached through pointers (as in KV pages).
TEST(WeightedSum, AttentionMatchesNaiveAttentionOverSelectedStridedRows) {
  std::mt19937 rng(7);
  const int64_t head_dim = 12, stride = 3 * head_dim, entries = 9, head_offset = head_dim;
  const std::vector<float> query = Random(head_dim, rng);
  const std::vector<float> keys = Random(entries * stride, rng);
  const std::vector<float> values = Random(entries * stride, rng);
  const std::vector<int64_t> rows = {0, 2, 3, 7, 8};
  const float scale = 0.5f;
  std::vector<float> weights, out(head_dim);
  std::vector<const float*> value_rows;
  for (int64_t row : rows) {
    weights.push_back(Dot(query.data(), keys.data() + row * stride + head_offset, head_dim) *
                      scale);
    value_rows.push_back(values.data() + row * stride + head_offset);
  }
  Softmax(weights.data(), static_cast<int64_t>(weights.size()));
  WeightedSum(weights, value_rows, head_dim, out.data());

  std::vector<double> scores;
  double max = -1e300, sum = 0;
  for (int64_t row : rows) {
    double dot = 0;
    for (int64_t d = 0; d < head_dim; ++d)
      dot += double(query[d]) * keys[row * stride + head_offset + d];
    scores.push_back(dot * scale);
    max = std::max(max, scores.back());
  }
  for (double& s : scores)
    sum += (s = std::exp(s - max));
  for (int64_t d = 0; d < head_dim; ++d) {
    double expected = 0;
    for (size_t j = 0; j < rows.size(); ++j)
      expected += scores[j] / sum * values[rows[j] * stride + head_offset + d];
    EXPECT_NEAR(out[d], expected, 1e-5);
  }
}

// The query heads of one KV head summed in one pass over the rows: each head's result is bit
// for bit the plain in-order float sum of that head alone (what WeightedSum gives it).
TEST(WeightedSum, SeveralHeadsInOnePassEqualEachHeadAlone) {
  std::mt19937 rng(11);
  const int64_t dim = 20, entries = 37, heads = 3;
  const std::vector<float> rows_data = Random(entries * dim, rng);
  std::vector<const float*> rows;
  for (int64_t j = 0; j < entries; ++j)
    rows.push_back(rows_data.data() + j * dim);
  std::vector<std::vector<float>> weights, outs(heads, std::vector<float>(dim, 7.f));
  std::vector<const float*> weight_rows;
  std::vector<float*> out_rows;
  for (int64_t g = 0; g < heads; ++g) {
    weights.push_back(Random(entries, rng));
    weight_rows.push_back(weights.back().data());
    out_rows.push_back(outs[g].data());
  }
  WeightedSums(weight_rows, rows, dim, out_rows);
  for (int64_t g = 0; g < heads; ++g) {
    std::vector<float> alone(dim), plain(dim, 0.f);
    WeightedSum(weights[g], rows, dim, alone.data());
    for (int64_t j = 0; j < entries; ++j) {
      for (int64_t d = 0; d < dim; ++d)
        plain[d] += weights[g][j] * rows[j][d];
    }
    EXPECT_EQ(std::memcmp(outs[g].data(), alone.data(), dim * sizeof(float)), 0) << g;
    EXPECT_EQ(std::memcmp(outs[g].data(), plain.data(), dim * sizeof(float)), 0) << g;
  }
}

TEST(WeightedSum, NoRowsGivesZeros) {
  std::vector<float> out(4, 9.f);
  WeightedSum({}, {}, 4, out.data());
  EXPECT_EQ(out, std::vector<float>(4, 0.f));
}

// ---- ThreadPool::ParallelFor ----

class ThreadPoolThreads : public ::testing::TestWithParam<int> {};

TEST_P(ThreadPoolThreads, SizeCountsTheCallingThread) {
  ThreadPool pool(GetParam());
  EXPECT_EQ(pool.size(), GetParam());
}

TEST_P(ThreadPoolThreads, EveryIndexExactlyOnceManyTimes) {
  ThreadPool pool(GetParam());
  std::mt19937 rng(GetParam());
  std::uniform_int_distribution<int64_t> size(0, 300);
  for (int round = 0; round < 2000; ++round) {
    const int64_t count = round < 4 ? round : size(rng);  // 0, 1, 2, 3 first
    std::vector<std::atomic<int>> hits(count);
    std::atomic<bool> out_of_range{false};
    pool.ParallelFor(count, [&](int64_t i) {
      if (i < 0 || i >= count) {
        out_of_range = true;
        return;
      }
      hits[i].fetch_add(1, std::memory_order_relaxed);
    });
    ASSERT_FALSE(out_of_range) << "round " << round;
    // Checked after return: an index still running or never run would show here.
    for (int64_t i = 0; i < count; ++i)
      ASSERT_EQ(hits[i].load(), 1) << "round " << round << ", index " << i << " of " << count;
  }
}

TEST_P(ThreadPoolThreads, ReturnsOnlyWhenSlowBodiesAreDone) {
  ThreadPool pool(GetParam());
  for (int round = 0; round < 20; ++round) {
    std::atomic<int64_t> finished{0};
    std::vector<int> out(16, 0);
    pool.ParallelFor(16, [&](int64_t i) {
      std::this_thread::sleep_for(std::chrono::microseconds(200 * (i % 3)));
      out[i] = static_cast<int>(i) + 1;  // plain write: the pool's return must publish it
      finished.fetch_add(1);
    });
    EXPECT_EQ(finished.load(), 16);
    for (int i = 0; i < 16; ++i)
      ASSERT_EQ(out[i], i + 1);
  }
}

INSTANTIATE_TEST_SUITE_P(OneAndFour, ThreadPoolThreads, ::testing::Values(1, 4));

TEST(ThreadPool, FourThreadsShareTheWork) {
  ThreadPool pool(4);
  std::mutex mutex;
  std::set<std::thread::id> ids;
  // Sleeping bodies leave the workers time to claim indices; over many rounds at least two
  // threads take part (a pool that ran everything on the caller would show one).
  for (int round = 0; round < 50 && ids.size() < 2; ++round) {
    pool.ParallelFor(8, [&](int64_t) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::lock_guard lock(mutex);
      ids.insert(std::this_thread::get_id());
    });
  }
  EXPECT_GE(ids.size(), 2u);
}

TEST(ThreadPool, OneThreadRunsInOrderOnTheCaller) {
  ThreadPool pool(1);
  std::vector<int64_t> order;
  const auto caller = std::this_thread::get_id();
  pool.ParallelFor(10, [&](int64_t i) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    order.push_back(i);
  });
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST_P(ThreadPoolThreads, RethrowsTheBodysExceptionAndStaysUsable) {
  ThreadPool pool(GetParam());
  std::atomic<int64_t> ran{0};
  EXPECT_THROW(pool.ParallelFor(1000,
                                [&](int64_t i) {
                                  ran.fetch_add(1);
                                  if (i == 10) throw std::runtime_error("index 10");
                                }),
               std::runtime_error);
  if (GetParam() == 1) {
    EXPECT_EQ(ran.load(), 11);  // in order on the caller: stops at once
  }
  // The next loop runs normally.
  std::vector<std::atomic<int>> hits(100);
  pool.ParallelFor(100, [&](int64_t i) { hits[i].fetch_add(1); });
  for (const auto& hit : hits)
    EXPECT_EQ(hit.load(), 1);
}

TEST(ThreadPool, ConcurrentCallersTakeTurns) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(2 * 500);
  auto caller = [&](int64_t offset) {
    for (int round = 0; round < 50; ++round)
      pool.ParallelFor(500, [&](int64_t i) { hits[offset + i].fetch_add(1); });
  };
  std::thread other(caller, 500);
  caller(0);
  other.join();
  for (const auto& hit : hits)
    ASSERT_EQ(hit.load(), 50);
}

}  // namespace
}  // namespace gistmem::model
