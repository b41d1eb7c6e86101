// RAII device memory and the host <-> device copies tests and loaders need.
//
// DeviceBuffer owns one cudaMalloc allocation; it is movable, not copyable, and frees on
// destruction. Allocation failure is a Status, never an exception: out of memory is
// RESOURCE_EXHAUSTED and the message names the bytes asked for and the bytes free.
// Thread-safety: a buffer is a plain owned pointer; concurrent use needs the caller's locking.
//
//   absl::StatusOr<DeviceBuffer> buffer = DeviceBuffer::Allocate(bytes);
//   if (!buffer.ok()) return buffer.status();
//   GISTMEM_RETURN_IF_ERROR(buffer->Upload(host.data(), bytes));
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gistmem::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Zero bytes gives an empty buffer (null pointer), which is OK.
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  // Allocate() plus a copy of `host` (synchronous).
  template <typename T>
  static absl::StatusOr<DeviceBuffer> FromHost(std::span<const T> host) {
    absl::StatusOr<DeviceBuffer> buffer = Allocate(host.size_bytes());
    if (!buffer.ok()) return buffer.status();
    absl::Status copied = buffer->Upload(host.data(), host.size_bytes());
    if (!copied.ok()) return copied;
    return buffer;
  }

  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

  // Makes the buffer at least `bytes` large; contents are lost when it grows.
  absl::Status Reserve(size_t bytes);
  // cudaMallocs this thread has made through DeviceBuffer so far (Reserve's growth included).
  // A caller that bakes buffer addresses into a CUDA graph compares it around calls that may
  // move buffers it cannot see (PagedAttention::Plan): unchanged, nothing moved.
  static uint64_t AllocationsOnThisThread();
  // Synchronous copies of the first `bytes` bytes; INVALID_ARGUMENT past the end.
  absl::Status Upload(const void* host, size_t bytes, size_t offset = 0);
  absl::Status Download(void* host, size_t bytes, size_t offset = 0) const;
  template <typename T>
  absl::StatusOr<std::vector<T>> DownloadVector(size_t count) const {
    std::vector<T> host(count);
    absl::Status status = Download(host.data(), count * sizeof(T));
    if (!status.ok()) return status;
    return host;
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace gistmem::cuda
