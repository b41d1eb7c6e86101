// Fixed-size KV pages for one memory tier, handed out from a free list under a byte budget.
//
// Sessions, documents and forks hold pages by reference count: a document attached to ten
// sessions, or a fork's shared prefix, is one set of pages. Where the pages live (host memory
// for the CPU engine, device memory for the CUDA engine) is the PageStorage's business; the
// pool only counts, hands out and takes back.
//
//   BlockPool pool(MakeHostPageStorage(layout, budget_bytes));
//   absl::StatusOr<int32_t> page = pool.Allocate();   // refcount 1, or RESOURCE_EXHAUSTED
//   pool.Retain(*page);                                // a second holder
//   pool.Release(*page); pool.Release(*page);          // back on the free list
//
// Thread-safety: every BlockPool method may be called from any thread. Page contents are not
// guarded: whoever holds a page writes it only while no one else reads it (copy on write).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/kv_layout.h"

namespace gistmem::memory {

// One slot of one page.
struct SlotRef {
  int32_t page = 0;
  int32_t slot = 0;
  bool operator==(const SlotRef&) const = default;
};

// Host memory holding parked pages (see PageStorage::AllocateParking): plain or page-locked,
// freed by the storage's own deleter.
using ParkingMemory = std::unique_ptr<std::byte, void (*)(std::byte*)>;

// Where a pool's pages live, and the operations on their contents that must run there.
// Rows cross this interface as fp32 in the store's segment layout, whatever the tier's element
// type: [layer][kv][entry][kv_dim] for the listed slots, entries in list order.
class PageStorage {
 public:
  virtual ~PageStorage() = default;

  virtual const PageLayout& layout() const = 0;
  // "host" or "gpu": what the stats call the tier.
  virtual std::string_view tier() const = 0;
  // The most pages this storage can address.
  virtual int32_t max_pages() const = 0;
  // Pages are made addressable in groups of this many (one allocation each).
  virtual int32_t pages_per_chunk() const = 0;
  // Makes chunk `chunk` addressable. RESOURCE_EXHAUSTED when its memory cannot be had.
  virtual absl::Status MapChunk(int32_t chunk) = 0;
  // Gives chunk `chunk`'s memory back; none of its pages is in use.
  virtual void UnmapChunk(int32_t chunk) = 0;
  // Where slot 0's key (kv = 0) or value (kv = 1) row of one layer lies in a page of a mapped
  // chunk (a host or device address as the tier is); the page's other slots follow, kv_dim
  // elements apart. The device tier keeps pages whole (memory/kv_layout.h's formula); the
  // host tier keeps each layer's rows of a chunk's pages together, so attention walking one
  // layer of a long session reads long contiguous runs.
  virtual void* RowsBase(int32_t page, int32_t layer, int32_t kv) const = 0;

  virtual void ExportRows(std::span<const SlotRef> slots, float* out) const = 0;
  virtual void ImportRows(std::span<const SlotRef> slots, const float* in) = 0;
  // Every layer's rows of from[i] copied to to[i].
  virtual void CopySlots(std::span<const SlotRef> from, std::span<const SlotRef> to) = 0;
  // dest's rows = the mean of the sources' rows, every layer: summed in list order, then
  // scaled (the order the PyTorch reference's mean uses).
  virtual void MeanOfSlots(std::span<const SlotRef> sources, SlotRef dest) = 0;

  // Parking (memory/session_kv.h, SessionKv::Park): whole pages copied out to host memory and
  // back, bit for bit, in the tier's own element type: page_bytes() per page, pages in list
  // order, inside a page whatever order the storage likes (only it reads them back).
  // Host memory for `bytes` of parked pages: page-locked where the tier is a device, so the
  // copies run at DMA speed. RESOURCE_EXHAUSTED when it cannot be had.
  virtual absl::StatusOr<ParkingMemory> AllocateParking(int64_t bytes) const = 0;
  // Errors are the tier's (a failed device copy: INTERNAL); the pages are then unchanged.
  virtual absl::Status ExportPages(std::span<const int32_t> pages, std::byte* out) const = 0;
  virtual absl::Status ImportPages(std::span<const int32_t> pages, const std::byte* in) = 0;
};

// fp32 pages in host memory (the CPU engine's tier), at most `budget_bytes` of them, mapped a
// chunk (about 4 MiB, mmap'd: zero-filled by the kernel as first touched, 2 MiB aligned for
// transparent huge pages) at a time as they are first needed.
std::unique_ptr<PageStorage> MakeHostPageStorage(PageLayout layout, int64_t budget_bytes);

class BlockPool {
 public:
  explicit BlockPool(std::unique_ptr<PageStorage> storage);
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  const PageLayout& layout() const { return storage_->layout(); }
  PageStorage& storage() const { return *storage_; }
  std::string_view tier() const { return storage_->tier(); }

  // A page with reference count 1, the lowest free one (so high chunks empty out and go back).
  // RESOURCE_EXHAUSTED, naming the budget, when every page is in use or memory cannot be had.
  absl::StatusOr<int32_t> Allocate();
  // One more holder of a page in use.
  void Retain(int32_t page);
  // One holder fewer; at zero the page is free, and a chunk with no page in use is unmapped,
  // except one such chunk (the lowest) kept mapped as a spare. A freed page keeps its rows
  // until it is written again; only a newly mapped chunk starts zeroed.
  void Release(int32_t page);
  int32_t RefCount(int32_t page) const;

  int64_t pages_in_use() const;
  int64_t bytes_in_use() const { return pages_in_use() * layout().page_bytes(); }
  // Bytes of the chunks currently mapped (what the tier really holds: the chunks with pages in
  // use, and at most one spare).
  int64_t bytes_mapped() const;
  int64_t budget_bytes() const { return int64_t{storage_->max_pages()} * layout().page_bytes(); }

 private:
  std::unique_ptr<PageStorage> storage_;
  mutable std::mutex mutex_;
  std::vector<int32_t> refcounts_ ABSL_GUARDED_BY(mutex_);      // [max_pages]
  std::vector<int32_t> used_in_chunk_ ABSL_GUARDED_BY(mutex_);  // [chunks]; -1: unmapped
  std::set<int32_t> free_ ABSL_GUARDED_BY(mutex_);              // free pages of mapped chunks
  int64_t pages_in_use_ ABSL_GUARDED_BY(mutex_) = 0;
  int32_t chunks_mapped_ ABSL_GUARDED_BY(mutex_) = 0;
  int32_t spare_chunk_ ABSL_GUARDED_BY(mutex_) = -1;  // mapped, no page in use; -1: none
};

}  // namespace gistmem::memory
