// What the CUDA runtime reports about the GPUs of this machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gistmem::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  uint64_t total_memory_bytes = 0;
  uint64_t l2_cache_bytes = 0;
};

// Empty when no driver or no device is present (a CPU-only machine is not an error).
std::vector<DeviceInfo> ListDevices();

// Version numbers as the runtime encodes them (e.g. 13000 for 13.0).
int RuntimeVersion();
int DriverVersion();

}  // namespace gistmem::cuda
