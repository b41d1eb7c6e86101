// Helpers shared by the GPU tests: Status assertions, device round trips, random data.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/backend/cuda/device_buffer.h"

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const ::absl::Status assert_ok_status_ = (expr);          \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_; \
  } while (false)

namespace gistmem::cuda::testing {

// Uploads `host` into a new device buffer; fails the test (and returns an empty buffer) on error.
template <typename T>
DeviceBuffer Upload(const std::vector<T>& host) {
  absl::StatusOr<DeviceBuffer> buffer = DeviceBuffer::FromHost(std::span<const T>(host));
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  return buffer.ok() ? std::move(*buffer) : DeviceBuffer();
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& buffer, size_t count) {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  absl::StatusOr<std::vector<T>> host = buffer.DownloadVector<T>(count);
  EXPECT_TRUE(host.ok()) << host.status();
  return host.ok() ? *host : std::vector<T>(count);
}

inline DeviceBuffer Allocate(size_t bytes) {
  absl::StatusOr<DeviceBuffer> buffer = DeviceBuffer::Allocate(bytes);
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  return buffer.ok() ? std::move(*buffer) : DeviceBuffer();
}

inline std::vector<float> RandomNormal(size_t count, std::mt19937& rng, float scale = 1.f) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> values(count);
  for (float& v : values)
    v = normal(rng);
  return values;
}

// Without a GPU the GPU tests skip (so `ctest -R X` on a build machine passes) unless
// GISTMEM_REQUIRE_GPU=1, which the GPU machine's run sets: there a missing GPU is a failure.
inline bool SkipWithoutGpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) return false;
  const char* require = std::getenv("GISTMEM_REQUIRE_GPU");
  return require == nullptr || std::string(require) != "1";
}
#define GISTMEM_SKIP_WITHOUT_GPU()                \
  if (::gistmem::cuda::testing::SkipWithoutGpu()) \
  GTEST_SKIP() << "no CUDA GPU here (GISTMEM_REQUIRE_GPU=1 makes it fail)"

// The checkout the tests read fixtures and models from: $GISTMEM_ROOT (the GPU machine runs
// from its own copy), else the source tree the binary was built from.
inline std::filesystem::path SourceRoot() {
  if (const char* root = std::getenv("GISTMEM_ROOT")) return root;
  return GISTMEM_SOURCE_DIR;
}

// What comparing logits rows found: the worst row-relative error (max |diff| / max |want| in a
// row), how many rows, how many had the same top-1 token, how many differed within a tie.
struct LogitComparison {
  double worst = 0;
  int64_t rows = 0, top1_same = 0, ties = 0;
  void Add(const LogitComparison& other) {
    worst = std::max(worst, other.worst);
    rows += other.rows;
    top1_same += other.top1_same;
    ties += other.ties;
  }
};

// Logits [rows, vocab] against a reference: the worst row-relative error must be <=
// `tolerance`, and the top-1 token must agree on every row unless the reference's top two are
// closer than `tie_fraction` of the row's scale (a tie the backend's precision cannot resolve).
inline LogitComparison CompareLogits(const std::vector<float>& got, const std::vector<float>& want,
                                     int64_t vocab, const std::string& what, double tolerance,
                                     double tie_fraction) {
  EXPECT_EQ(got.size(), want.size()) << what;
  LogitComparison c;
  for (size_t row = 0; (row + 1) * vocab <= std::min(got.size(), want.size()); ++row) {
    const float* g = &got[row * vocab];
    const float* w = &want[row * vocab];
    double diff = 0, scale = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      diff = std::max(diff, std::fabs(double(g[v]) - w[v]));
      scale = std::max(scale, std::fabs(double(w[v])));
    }
    ++c.rows;
    c.worst = std::max(c.worst, diff / scale);
    const int64_t top_got = std::max_element(g, g + vocab) - g;
    const int64_t top_want = std::max_element(w, w + vocab) - w;
    if (top_got == top_want) {
      ++c.top1_same;
      continue;
    }
    std::vector<float> sorted(w, w + vocab);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
    const bool tie = sorted[0] - sorted[1] < tie_fraction * scale;
    c.ties += tie;
    EXPECT_TRUE(tie) << what << " row " << row << ": top-1 " << top_got << " vs " << top_want
                     << ", reference gap " << (sorted[0] - sorted[1]) / scale << " of the scale";
  }
  EXPECT_LE(c.worst, tolerance) << what;
  return c;
}

}  // namespace gistmem::cuda::testing
