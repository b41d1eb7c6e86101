// The CUDA RMSNorm kernel against the CPU reference, on fresh random inputs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "model/backend/cpu/ops.h"
#include "model/backend/cuda/bf16.h"
#include "model/backend/cuda/device_info.h"
#include "model/backend/cuda/rms_norm.h"
#include "tests/gpu/gpu_test_util.h"

namespace gistmem::cuda {
namespace {

using testing::Download;
using testing::RandomNormal;
using testing::Upload;

TEST(CudaDevice, ReportsAtLeastOneGpu) {
  const std::vector<DeviceInfo> devices = ListDevices();
  ASSERT_FALSE(devices.empty()) << "no CUDA device: run GPU tests on a machine with a GPU";
  EXPECT_GT(devices[0].multiprocessors, 0);
  EXPECT_GT(devices[0].total_memory_bytes, 1ull << 30);
  EXPECT_GE(RuntimeVersion(), 13000);
}

class CudaRmsNorm : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

// fp32 out: float sums in a different order than the CPU's double sum; 1e-5 relative.
// bf16 out: the same value rounded to bf16 (8 bits of mantissa): 2^-8 relative, plus the fp32 part.
TEST_P(CudaRmsNorm, MatchesCpuReference) {
  const auto [rows, dim] = GetParam();
  std::mt19937 rng(static_cast<unsigned>(rows * 7919 + dim));
  const std::vector<float> x = RandomNormal(rows * dim, rng, 3.f);
  const std::vector<float> weight = RandomNormal(dim, rng, 1.f);
  std::vector<float> expected(rows * dim);
  model::RmsNorm(x.data(), weight.data(), expected.data(), rows, dim, 1e-5f);

  DeviceBuffer d_x = Upload(x), d_weight = Upload(weight);
  // Poison the output so an element the kernel skips shows up as NaN.
  DeviceBuffer d_out =
      Upload(std::vector<float>(x.size(), std::numeric_limits<float>::quiet_NaN()));
  DeviceBuffer d_bf16 = Upload(std::vector<uint16_t>(x.size(), 0x7fc0));
  ASSERT_OK(
      RmsNorm(d_x.as<float>(), d_weight.as<float>(), d_out.as<float>(), rows, dim, 1e-5f, nullptr));
  ASSERT_OK(RmsNormToBf16(d_x.as<float>(), d_weight.as<float>(), d_bf16.get(), rows, dim, 1e-5f,
                          nullptr));
  const std::vector<float> got = Download<float>(d_out, x.size());
  const std::vector<uint16_t> got_bf16 = Download<uint16_t>(d_bf16, x.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "element " << i;
    ASSERT_NEAR(got[i], expected[i], 1e-5f * (1.f + std::fabs(expected[i]))) << "element " << i;
    ASSERT_NEAR(Bf16ToFloat(got_bf16[i]), expected[i],
                std::ldexp(1.f, -8) * std::fabs(expected[i]) + 1e-5f)
        << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaRmsNorm,
                         ::testing::Values(std::pair<int64_t, int64_t>{1, 1},
                                           std::pair<int64_t, int64_t>{3, 64},
                                           std::pair<int64_t, int64_t>{37, 1000},
                                           std::pair<int64_t, int64_t>{128, 4096},
                                           std::pair<int64_t, int64_t>{5, 8193}));

TEST(CudaRmsNormInPlace, OutputMayAliasInput) {
  std::mt19937 rng(5);
  const int64_t rows = 9, dim = 513;
  const std::vector<float> x = RandomNormal(rows * dim, rng, 2.f);
  const std::vector<float> weight = RandomNormal(dim, rng, 1.f);
  std::vector<float> expected(x.size());
  model::RmsNorm(x.data(), weight.data(), expected.data(), rows, dim, 1e-6f);
  DeviceBuffer d_x = Upload(x), d_weight = Upload(weight);
  ASSERT_OK(
      RmsNorm(d_x.as<float>(), d_weight.as<float>(), d_x.as<float>(), rows, dim, 1e-6f, nullptr));
  const std::vector<float> got = Download<float>(d_x, x.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], expected[i], 1e-5f * (1.f + std::fabs(expected[i])));
  }
}

}  // namespace
}  // namespace gistmem::cuda
