// Turns CUDA runtime errors into exceptions that name the call and the failing expression.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace gistmem::cuda {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline void Check(cudaError_t status, const char* expression, const char* file, int line) {
  if (status != cudaSuccess) {
    throw CudaError(std::string(expression) + " failed at " + file + ":" + std::to_string(line) +
                    ": " + cudaGetErrorString(status));
  }
}

}  // namespace gistmem::cuda

#define GISTMEM_CUDA_CHECK(expr) ::gistmem::cuda::Check((expr), #expr, __FILE__, __LINE__)
