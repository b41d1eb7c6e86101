// CUDA errors as absl::Status, so no CUDA failure crosses the backend's API as an exception.
//
// Codes are chosen by what the caller should do:
//   cudaErrorMemoryAllocation       -> RESOURCE_EXHAUSTED (free pages or admit fewer sessions)
//   invalid value / config / symbol -> INTERNAL (a bug in our launch code: fix it)
//   no device, driver too old       -> FAILED_PRECONDITION (the machine cannot run this backend)
//   anything else (a sticky launch failure, ECC error, illegal address)  -> INTERNAL; the
//   context is then unusable and the process should stop serving from this GPU.
//
//   GISTMEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(...));   // inside a function returning Status
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "absl/status/status.h"

namespace gistmem::cuda {

inline absl::Status CudaStatus(cudaError_t error, const char* what, const char* file, int line) {
  if (error == cudaSuccess) return absl::OkStatus();
  std::string message = std::string(what) + " failed at " + file + ":" + std::to_string(line) +
                        ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")";
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace gistmem::cuda

#define GISTMEM_CUDA_STATUS(expr) ::gistmem::cuda::CudaStatus((expr), #expr, __FILE__, __LINE__)

#define GISTMEM_CUDA_RETURN_IF_ERROR(expr)                           \
  do {                                                               \
    ::absl::Status gistmem_cuda_status_ = GISTMEM_CUDA_STATUS(expr); \
    if (!gistmem_cuda_status_.ok()) return gistmem_cuda_status_;     \
  } while (false)

// Propagates any non-OK absl::Status.
#define GISTMEM_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status gistmem_status_ = (expr);           \
    if (!gistmem_status_.ok()) return gistmem_status_; \
  } while (false)

// After a kernel launch: reports a bad launch configuration at once (errors inside the kernel
// surface at the next synchronizing call).
#define GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED() GISTMEM_CUDA_RETURN_IF_ERROR(cudaGetLastError())
