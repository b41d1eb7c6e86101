// KV pages on the GPU: a memory::PageStorage whose pages are bf16 rows (memory/kv_layout.h's
// PageLayout with element_bytes == 2) in ONE device allocation made up front, as large as the
// engine's KV budget allows. The BlockPool above it still maps and unmaps chunks (about 1 MiB
// of pages) to count what sessions hold; mapping a chunk here only zeroes it (no stale rows),
// unmapping does nothing: the arena keeps the whole budget for the engine's lifetime.
//
// Rows cross the PageStorage interface as fp32 ([layer][kv][entry][kv_dim]); ExportRows and
// ImportRows convert on the device through a staging buffer, CopySlots and MeanOfSlots are
// kernels (MeanOfSlots is kernels.h's PooledMean). Every operation finishes before it returns.
//
//   absl::StatusOr<std::unique_ptr<DevicePageStorage>> storage =
//       DevicePageStorage::Create(transformer.PageLayoutFor(16), budget_bytes, /*device=*/0);
//   memory::BlockPool pool(*std::move(storage));
//
// Errors: PageStorage's row operations return nothing, so a CUDA failure inside one is kept
// (the first one; the context is then usually unusable) and reported by error(); the engine
// returns it from its next forward step instead of reading garbage. MapChunk returns its own.
// Thread-safety: every method may be called from any thread (one mutex around the staging
// buffers and the stream).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/block_pool.h"
#include "memory/kv_layout.h"
#include "model/backend/cuda/cuda_transformer.h"
#include "model/backend/cuda/device_buffer.h"

namespace gistmem::cuda {

class DevicePageStorage final : public memory::PageStorage {
 public:
  // budget_bytes / layout.page_bytes() pages (at least one) on device `device`.
  // INVALID_ARGUMENT for a layout that is not bf16 or a budget below one page;
  // RESOURCE_EXHAUSTED when the GPU has too little free memory for the arena.
  static absl::StatusOr<std::unique_ptr<DevicePageStorage>> Create(const memory::PageLayout& layout,
                                                                   int64_t budget_bytes,
                                                                   int device);
  ~DevicePageStorage() override;

  const memory::PageLayout& layout() const override { return pages_.layout(); }
  std::string_view tier() const override { return "gpu"; }
  int32_t max_pages() const override { return static_cast<int32_t>(pages_.num_pages()); }
  int32_t pages_per_chunk() const override { return pages_per_chunk_; }
  absl::Status MapChunk(int32_t chunk) override;
  void UnmapChunk(int32_t) override {}
  void* RowsBase(int32_t page, int32_t layer, int32_t kv) const override;

  void ExportRows(std::span<const memory::SlotRef> slots, float* out) const override;
  // A page's first element in the arena: device pages are whole (memory/kv_layout.h).
  void* PageBase(int32_t page) const;
  void ImportRows(std::span<const memory::SlotRef> slots, const float* in) override;
  void CopySlots(std::span<const memory::SlotRef> from,
                 std::span<const memory::SlotRef> to) override;
  void MeanOfSlots(std::span<const memory::SlotRef> sources, memory::SlotRef dest) override;

  // Parking: page-locked host memory (cudaMallocHost), whole pages copied by DMA, one copy per
  // run of consecutive pages; each call finishes before it returns.
  absl::StatusOr<memory::ParkingMemory> AllocateParking(int64_t bytes) const override;
  absl::Status ExportPages(std::span<const int32_t> pages, std::byte* out) const override;
  absl::Status ImportPages(std::span<const int32_t> pages, const std::byte* in) override;

  // The arena as CudaTransformer::Forward reads it.
  KvPagePool& pages() { return pages_; }
  // The first CUDA failure of a row operation, or OK.
  absl::Status error() const;

 private:
  DevicePageStorage(KvPagePool pages, int device, cudaStream_t stream);
  // Uploads `ints` to the index buffer; Keep()s the first failure.
  absl::Status UploadIndices(const std::vector<int32_t>& ints) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Keep(const absl::Status& status) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Copies whole pages, in list order, out of the arena to `out`, or (out null) into it from
  // `in`.
  absl::Status CopyPages(std::span<const int32_t> pages, std::byte* out, const std::byte* in) const;

  KvPagePool pages_;
  int device_;
  int32_t pages_per_chunk_ = 1;
  cudaStream_t stream_ = nullptr;
  mutable std::mutex mutex_;
  mutable DeviceBuffer indices_ ABSL_GUARDED_BY(mutex_);  // int32 slot lists
  mutable DeviceBuffer staging_ ABSL_GUARDED_BY(mutex_);  // fp32 rows
  mutable absl::Status error_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace gistmem::cuda
