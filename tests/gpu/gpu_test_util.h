// Helpers shared by the GPU tests: Status assertions, device round trips, random data.
#pragma once

#include <gtest/gtest.h>

#include <random>
#include <span>
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

}  // namespace gistmem::cuda::testing
