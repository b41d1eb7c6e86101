// The CUDA RMSNorm kernel against the CPU reference, on fresh random inputs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "model/backend/cpu/ops.h"
#include "model/backend/cuda/cuda_check.h"
#include "model/backend/cuda/device_info.h"
#include "model/backend/cuda/rms_norm.h"

namespace gistmem::cuda {
namespace {

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    GISTMEM_CUDA_CHECK(cudaMalloc(&data_, count * sizeof(T)));
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() { return data_; }
  void Upload(const std::vector<T>& host) {
    GISTMEM_CUDA_CHECK(cudaMemcpy(data_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> Download() const {
    std::vector<T> host(count_);
    GISTMEM_CUDA_CHECK(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  T* data_ = nullptr;
  size_t count_;
};

std::vector<float> RandomVector(size_t count, std::mt19937& rng, float scale) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> values(count);
  for (float& v : values)
    v = normal(rng);
  return values;
}

TEST(CudaDevice, ReportsAtLeastOneGpu) {
  const std::vector<DeviceInfo> devices = ListDevices();
  ASSERT_FALSE(devices.empty()) << "no CUDA device: run GPU tests on a machine with a GPU";
  EXPECT_GT(devices[0].multiprocessors, 0);
  EXPECT_GT(devices[0].total_memory_bytes, 1ull << 30);
  EXPECT_GE(RuntimeVersion(), 13000);
}

class CudaRmsNorm : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(CudaRmsNorm, MatchesCpuReference) {
  const auto [rows, dim] = GetParam();
  std::mt19937 rng(static_cast<unsigned>(rows * 7919 + dim));
  const std::vector<float> x = RandomVector(rows * dim, rng, 3.f);
  const std::vector<float> weight = RandomVector(dim, rng, 1.f);
  std::vector<float> expected(rows * dim);
  model::RmsNorm(x.data(), weight.data(), expected.data(), rows, dim, 1e-5f);

  DeviceBuffer<float> d_x(x.size()), d_weight(weight.size()), d_out(x.size());
  d_x.Upload(x);
  d_weight.Upload(weight);
  // Poison the output so an element the kernel skips shows up as NaN.
  d_out.Upload(std::vector<float>(x.size(), std::numeric_limits<float>::quiet_NaN()));
  RmsNorm(d_x.get(), d_weight.get(), d_out.get(), rows, dim, 1e-5f, nullptr);
  GISTMEM_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = d_out.Download();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "element " << i;
    ASSERT_NEAR(got[i], expected[i], 1e-5f * (1.f + std::fabs(expected[i]))) << "element " << i;
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
  const std::vector<float> x = RandomVector(rows * dim, rng, 2.f);
  const std::vector<float> weight = RandomVector(dim, rng, 1.f);
  std::vector<float> expected(x.size());
  model::RmsNorm(x.data(), weight.data(), expected.data(), rows, dim, 1e-6f);
  DeviceBuffer<float> d_x(x.size()), d_weight(weight.size());
  d_x.Upload(x);
  d_weight.Upload(weight);
  RmsNorm(d_x.get(), d_weight.get(), d_x.get(), rows, dim, 1e-6f, nullptr);
  GISTMEM_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = d_x.Download();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], expected[i], 1e-5f * (1.f + std::fabs(expected[i])));
  }
}

}  // namespace
}  // namespace gistmem::cuda
