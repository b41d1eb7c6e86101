#include "model/backend/cuda/device_buffer.h"

#include <string>
#include <utility>

#include "model/backend/cuda/cuda_status.h"

namespace gistmem::cuda {
namespace {

thread_local uint64_t allocations_on_this_thread = 0;

}  // namespace

uint64_t DeviceBuffer::AllocationsOnThisThread() {
  return allocations_on_this_thread;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  const cudaError_t error = cudaMalloc(&buffer.data_, bytes);
  if (error != cudaSuccess) {
    cudaGetLastError();  // an allocation failure is not sticky; clear it for the next call
    buffer.data_ = nullptr;
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    cudaGetLastError();
    const std::string message = "cudaMalloc of " + std::to_string(bytes) + " bytes failed (" +
                                std::to_string(free_bytes) + " of " + std::to_string(total_bytes) +
                                " bytes free): " + cudaGetErrorString(error);
    if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
    return CudaStatus(error, message.c_str(), __FILE__, __LINE__);
  }
  buffer.bytes_ = bytes;
  ++allocations_on_this_thread;
  return buffer;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

absl::Status DeviceBuffer::Reserve(size_t bytes) {
  if (bytes <= bytes_) return absl::OkStatus();
  absl::StatusOr<DeviceBuffer> bigger = Allocate(bytes);
  if (!bigger.ok()) return bigger.status();
  *this = std::move(*bigger);
  return absl::OkStatus();
}

absl::Status DeviceBuffer::Upload(const void* host, size_t bytes, size_t offset) {
  if (offset + bytes > bytes_) {
    return absl::InvalidArgumentError("upload of " + std::to_string(bytes) + " bytes at " +
                                      std::to_string(offset) + " past a buffer of " +
                                      std::to_string(bytes_));
  }
  if (bytes == 0) return absl::OkStatus();
  GISTMEM_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(static_cast<char*>(data_) + offset, host, bytes, cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

absl::Status DeviceBuffer::Download(void* host, size_t bytes, size_t offset) const {
  if (offset + bytes > bytes_) {
    return absl::InvalidArgumentError("download of " + std::to_string(bytes) + " bytes at " +
                                      std::to_string(offset) + " past a buffer of " +
                                      std::to_string(bytes_));
  }
  if (bytes == 0) return absl::OkStatus();
  GISTMEM_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(host, static_cast<const char*>(data_) + offset, bytes, cudaMemcpyDeviceToHost));
  return absl::OkStatus();
}

}  // namespace gistmem::cuda
