#include "model/backend/cuda/device_page_storage.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "model/backend/cuda/cuda_status.h"
#include "model/backend/cuda/kernels.h"

namespace gistmem::cuda {
namespace {

__device__ __forceinline__ int64_t RowStart(const memory::PageLayout& layout, int32_t page,
                                            int32_t layer, int32_t kv, int32_t slot) {
  return static_cast<int64_t>(page) * layout.num_layers * 2 * layout.block_size * layout.kv_dim +
         ((static_cast<int64_t>(layer) * 2 + kv) * layout.block_size + slot) * layout.kv_dim;
}

// grid (entries, layers * 2); block (layer, kv) of entry e <-> rows[(layer * 2 + kv) * n + e].
// pages[e], slots[e] name the entry's slot.
__global__ void ExportRowsKernel(const __nv_bfloat16* pool, memory::PageLayout layout,
                                 const int32_t* pages, const int32_t* slots, int32_t n,
                                 float* rows) {
  const int32_t e = blockIdx.x, layer = blockIdx.y / 2, kv = blockIdx.y % 2;
  const __nv_bfloat16* in = pool + RowStart(layout, pages[e], layer, kv, slots[e]);
  float* out = rows + (static_cast<int64_t>(blockIdx.y) * n + e) * layout.kv_dim;
  for (int i = threadIdx.x; i < layout.kv_dim; i += blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

__global__ void ImportRowsKernel(__nv_bfloat16* pool, memory::PageLayout layout,
                                 const int32_t* pages, const int32_t* slots, int32_t n,
                                 const float* rows) {
  const int32_t e = blockIdx.x, layer = blockIdx.y / 2, kv = blockIdx.y % 2;
  __nv_bfloat16* out = pool + RowStart(layout, pages[e], layer, kv, slots[e]);
  const float* in = rows + (static_cast<int64_t>(blockIdx.y) * n + e) * layout.kv_dim;
  for (int i = threadIdx.x; i < layout.kv_dim; i += blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

// indices: from_pages[n], from_slots[n], to_pages[n], to_slots[n].
__global__ void CopySlotsKernel(__nv_bfloat16* pool, memory::PageLayout layout,
                                const int32_t* indices, int32_t n) {
  const int32_t e = blockIdx.x, layer = blockIdx.y / 2, kv = blockIdx.y % 2;
  const __nv_bfloat16* in = pool + RowStart(layout, indices[e], layer, kv, indices[n + e]);
  __nv_bfloat16* out = pool + RowStart(layout, indices[2 * n + e], layer, kv, indices[3 * n + e]);
  for (int i = threadIdx.x; i < layout.kv_dim; i += blockDim.x)
    out[i] = in[i];
}

}  // namespace

absl::StatusOr<std::unique_ptr<DevicePageStorage>> DevicePageStorage::Create(
    const memory::PageLayout& layout, int64_t budget_bytes, int device) {
  if (layout.element_bytes != 2 || layout.page_bytes() <= 0) {
    return absl::InvalidArgumentError("GPU KV pages must be bf16 with a positive page size");
  }
  const int64_t num_pages = std::min<int64_t>(budget_bytes / layout.page_bytes(), 1 << 30);
  if (num_pages < 1) {
    return absl::InvalidArgumentError(absl::StrCat("a KV budget of ", budget_bytes,
                                                   " bytes holds no page of ", layout.page_bytes(),
                                                   " bytes"));
  }
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  absl::StatusOr<KvPagePool> pages = KvPagePool::Allocate(layout, num_pages);
  if (!pages.ok()) return pages.status();
  cudaStream_t stream = nullptr;
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return std::unique_ptr<DevicePageStorage>(
      new DevicePageStorage(*std::move(pages), device, stream));
}

DevicePageStorage::DevicePageStorage(KvPagePool pages, int device, cudaStream_t stream)
    : pages_(std::move(pages)), device_(device), stream_(stream) {
  pages_per_chunk_ = static_cast<int32_t>(std::clamp<int64_t>(
      (int64_t{1} << 20) / pages_.layout().page_bytes(), 1, pages_.num_pages()));
}

DevicePageStorage::~DevicePageStorage() {
  if (stream_ != nullptr) {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

absl::Status DevicePageStorage::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void DevicePageStorage::Keep(const absl::Status& status) const {
  if (status.ok() || !error_.ok()) return;
  std::fprintf(stderr, "gistmem: GPU KV page operation failed: %s\n", status.ToString().c_str());
  error_ = status;
}

void* DevicePageStorage::PageBase(int32_t page) const {
  return static_cast<char*>(pages_.data()) + int64_t{page} * pages_.layout().page_bytes();
}

void* DevicePageStorage::RowsBase(int32_t page, int32_t layer, int32_t kv) const {
  const memory::PageLayout& layout = pages_.layout();
  return static_cast<char*>(PageBase(page)) + layout.RowOffset(layer, kv, 0) * layout.element_bytes;
}

absl::Status DevicePageStorage::MapChunk(int32_t chunk) {
  std::lock_guard lock(mutex_);
  const int64_t first = int64_t{chunk} * pages_per_chunk_;
  const int64_t count = std::min<int64_t>(pages_per_chunk_, pages_.num_pages() - first);
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  GISTMEM_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(PageBase(static_cast<int32_t>(first)), 0,
                      static_cast<size_t>(count * pages_.layout().page_bytes()), stream_));
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::StatusOr<memory::ParkingMemory> DevicePageStorage::AllocateParking(int64_t bytes) const {
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  void* memory = nullptr;
  if (cudaError_t error = cudaMallocHost(&memory, static_cast<size_t>(std::max<int64_t>(bytes, 1)));
      error != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it
    return absl::ResourceExhaustedError(
        absl::StrCat("page-locked host memory for ", bytes,
                     " bytes of parked KV pages: ", cudaGetErrorString(error)));
  }
  return memory::ParkingMemory(static_cast<std::byte*>(memory),
                               [](std::byte* p) { cudaFreeHost(p); });
}

absl::Status DevicePageStorage::CopyPages(std::span<const int32_t> pages, std::byte* out,
                                          const std::byte* in) const {
  std::lock_guard lock(mutex_);
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  const auto page_bytes = static_cast<size_t>(pages_.layout().page_bytes());
  for (size_t begin = 0; begin < pages.size();) {
    size_t end = begin + 1;
    while (end < pages.size() && pages[end] == pages[end - 1] + 1)
      ++end;
    void* device = PageBase(pages[begin]);
    const size_t offset = begin * page_bytes, bytes = (end - begin) * page_bytes;
    GISTMEM_CUDA_RETURN_IF_ERROR(
        out != nullptr
            ? cudaMemcpyAsync(out + offset, device, bytes, cudaMemcpyDeviceToHost, stream_)
            : cudaMemcpyAsync(device, in + offset, bytes, cudaMemcpyHostToDevice, stream_));
    begin = end;
  }
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status DevicePageStorage::ExportPages(std::span<const int32_t> pages, std::byte* out) const {
  return CopyPages(pages, out, nullptr);
}

absl::Status DevicePageStorage::ImportPages(std::span<const int32_t> pages, const std::byte* in) {
  return CopyPages(pages, nullptr, in);
}

absl::Status DevicePageStorage::UploadIndices(const std::vector<int32_t>& ints) const {
  const size_t bytes = ints.size() * sizeof(int32_t);
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  GISTMEM_RETURN_IF_ERROR(indices_.Reserve(bytes));
  GISTMEM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(indices_.get(), ints.data(), bytes, cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

void DevicePageStorage::ExportRows(std::span<const memory::SlotRef> slots, float* out) const {
  if (slots.empty()) return;
  std::lock_guard lock(mutex_);
  const memory::PageLayout& layout = pages_.layout();
  const auto n = static_cast<int32_t>(slots.size());
  const size_t bytes = slots.size() * 2 * layout.num_layers * layout.kv_dim * sizeof(float);
  std::vector<int32_t> ints(2 * slots.size());
  for (size_t e = 0; e < slots.size(); ++e) {
    ints[e] = slots[e].page;
    ints[slots.size() + e] = slots[e].slot;
  }
  Keep([&]() -> absl::Status {
    GISTMEM_RETURN_IF_ERROR(UploadIndices(ints));
    GISTMEM_RETURN_IF_ERROR(staging_.Reserve(bytes));
    const int32_t* d = indices_.as<int32_t>();
    ExportRowsKernel<<<dim3(n, 2 * layout.num_layers), 128, 0, stream_>>>(
        static_cast<const __nv_bfloat16*>(pages_.data()), layout, d, d + n, n,
        staging_.as<float>());
    GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
    GISTMEM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(out, staging_.get(), bytes, cudaMemcpyDeviceToHost, stream_));
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }());
}

void DevicePageStorage::ImportRows(std::span<const memory::SlotRef> slots, const float* in) {
  if (slots.empty()) return;
  std::lock_guard lock(mutex_);
  const memory::PageLayout& layout = pages_.layout();
  const auto n = static_cast<int32_t>(slots.size());
  const size_t bytes = slots.size() * 2 * layout.num_layers * layout.kv_dim * sizeof(float);
  std::vector<int32_t> ints(2 * slots.size());
  for (size_t e = 0; e < slots.size(); ++e) {
    ints[e] = slots[e].page;
    ints[slots.size() + e] = slots[e].slot;
  }
  Keep([&]() -> absl::Status {
    GISTMEM_RETURN_IF_ERROR(UploadIndices(ints));
    GISTMEM_RETURN_IF_ERROR(staging_.Reserve(bytes));
    GISTMEM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(staging_.get(), in, bytes, cudaMemcpyHostToDevice, stream_));
    const int32_t* d = indices_.as<int32_t>();
    ImportRowsKernel<<<dim3(n, 2 * layout.num_layers), 128, 0, stream_>>>(
        static_cast<__nv_bfloat16*>(pages_.data()), layout, d, d + n, n, staging_.as<float>());
    GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }());
}

void DevicePageStorage::CopySlots(std::span<const memory::SlotRef> from,
                                  std::span<const memory::SlotRef> to) {
  if (from.empty()) return;
  std::lock_guard lock(mutex_);
  const memory::PageLayout& layout = pages_.layout();
  const auto n = static_cast<int32_t>(from.size());
  std::vector<int32_t> ints(4 * from.size());
  for (size_t e = 0; e < from.size(); ++e) {
    ints[e] = from[e].page;
    ints[n + e] = from[e].slot;
    ints[2 * n + e] = to[e].page;
    ints[3 * n + e] = to[e].slot;
  }
  Keep([&]() -> absl::Status {
    GISTMEM_RETURN_IF_ERROR(UploadIndices(ints));
    CopySlotsKernel<<<dim3(n, 2 * layout.num_layers), 128, 0, stream_>>>(
        static_cast<__nv_bfloat16*>(pages_.data()), layout, indices_.as<int32_t>(), n);
    GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }());
}

void DevicePageStorage::MeanOfSlots(std::span<const memory::SlotRef> sources,
                                    memory::SlotRef dest) {
  std::lock_guard lock(mutex_);
  // [offsets 0, n | source pages | source slots | dest page | dest slot]
  const auto n = static_cast<int32_t>(sources.size());
  std::vector<int32_t> ints = {0, n};
  for (const memory::SlotRef& s : sources)
    ints.push_back(s.page);
  for (const memory::SlotRef& s : sources)
    ints.push_back(s.slot);
  ints.push_back(dest.page);
  ints.push_back(dest.slot);
  Keep([&]() -> absl::Status {
    GISTMEM_RETURN_IF_ERROR(UploadIndices(ints));
    const int32_t* d = indices_.as<int32_t>();
    GISTMEM_RETURN_IF_ERROR(PooledMean(d, d + 2, d + 2 + n, d + 2 + 2 * n, d + 3 + 2 * n, 1,
                                       pages_.data(), pages_.layout(), stream_));
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }());
}

}  // namespace gistmem::cuda
