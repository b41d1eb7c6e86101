#include "model/backend/cuda/device_info.h"

#include <cuda_runtime.h>

#include "model/backend/cuda/cuda_check.h"

namespace gistmem::cuda {

std::vector<DeviceInfo> ListDevices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" status; no GPU is a valid answer
    return {};
  }
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    GISTMEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
    devices.push_back({.index = i,
                       .name = prop.name,
                       .compute_major = prop.major,
                       .compute_minor = prop.minor,
                       .multiprocessors = prop.multiProcessorCount,
                       .total_memory_bytes = prop.totalGlobalMem,
                       .l2_cache_bytes = static_cast<uint64_t>(prop.l2CacheSize)});
  }
  return devices;
}

int RuntimeVersion() {
  int version = 0;
  GISTMEM_CUDA_CHECK(cudaRuntimeGetVersion(&version));
  return version;
}

int DriverVersion() {
  int version = 0;
  GISTMEM_CUDA_CHECK(cudaDriverGetVersion(&version));
  return version;
}

}  // namespace gistmem::cuda
