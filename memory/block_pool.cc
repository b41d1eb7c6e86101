#include "memory/block_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace gistmem::memory {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

// Host pages: fp32, one allocation per chunk of about 4 MiB (at least one page), laid out
// layer-major (see Row) and, from 2 MiB up, on transparent huge pages: attention walks one
// layer of every page of a long session for every query row.
class HostPageStorage final : public PageStorage {
 public:
  HostPageStorage(PageLayout layout, int64_t budget_bytes) : layout_(layout) {
    const int64_t page_bytes = layout_.page_bytes();
    max_pages_ = static_cast<int32_t>(std::clamp<int64_t>(budget_bytes / page_bytes, 0, 1 << 30));
    // About 4 MiB a chunk, never more than the whole budget.
    pages_per_chunk_ = static_cast<int32_t>(std::clamp<int64_t>(
        static_cast<int64_t>(2 * kHugePage) / page_bytes, 1, std::max(max_pages_, 1)));
    chunks_.resize((max_pages_ + pages_per_chunk_ - 1) / pages_per_chunk_, nullptr);
  }
  ~HostPageStorage() override {
    for (float* chunk : chunks_)
      if (chunk != nullptr) munmap(chunk, ChunkBytes());
  }
  HostPageStorage(const HostPageStorage&) = delete;
  HostPageStorage& operator=(const HostPageStorage&) = delete;

  const PageLayout& layout() const override { return layout_; }
  std::string_view tier() const override { return "host"; }
  int32_t max_pages() const override { return max_pages_; }
  int32_t pages_per_chunk() const override { return pages_per_chunk_; }

  absl::Status MapChunk(int32_t chunk) override {
    float* memory = MapZeroed(ChunkBytes());
    if (memory == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("host memory for ", ChunkBytes(), " bytes of KV pages"));
    }
    chunks_[chunk] = memory;
    return absl::OkStatus();
  }
  void UnmapChunk(int32_t chunk) override {
    munmap(chunks_[chunk], ChunkBytes());
    chunks_[chunk] = nullptr;
  }
  void* RowsBase(int32_t page, int32_t layer, int32_t kv) const override {
    return Row({.page = page, .slot = 0}, layer, kv);
  }

  void ExportRows(std::span<const SlotRef> slots, float* out) const override {
    ForEachRow(slots, [&](float* row, size_t index) {
      std::memcpy(out + index * layout_.kv_dim, row, RowBytes());
    });
  }
  void ImportRows(std::span<const SlotRef> slots, const float* in) override {
    ForEachRow(slots, [&](float* row, size_t index) {
      std::memcpy(row, in + index * layout_.kv_dim, RowBytes());
    });
  }
  void CopySlots(std::span<const SlotRef> from, std::span<const SlotRef> to) override {
    for (size_t i = 0; i < from.size(); ++i) {
      for (int32_t layer = 0; layer < layout_.num_layers; ++layer) {
        for (int32_t kv = 0; kv < 2; ++kv)
          std::memcpy(Row(to[i], layer, kv), Row(from[i], layer, kv), RowBytes());
      }
    }
  }
  void MeanOfSlots(std::span<const SlotRef> sources, SlotRef dest) override {
    const float scale = 1.0f / static_cast<float>(sources.size());
    for (int32_t layer = 0; layer < layout_.num_layers; ++layer) {
      for (int32_t kv = 0; kv < 2; ++kv) {
        float* out = Row(dest, layer, kv);
        std::fill_n(out, layout_.kv_dim, 0.f);
        for (const SlotRef& source : sources) {
          const float* in = Row(source, layer, kv);
          for (int32_t i = 0; i < layout_.kv_dim; ++i)
            out[i] += in[i];
        }
        for (int32_t i = 0; i < layout_.kv_dim; ++i)
          out[i] *= scale;
      }
    }
  }

  absl::StatusOr<ParkingMemory> AllocateParking(int64_t bytes) const override {
    auto* memory =
        static_cast<std::byte*>(std::malloc(static_cast<size_t>(std::max<int64_t>(bytes, 1))));
    if (memory == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("host memory for ", bytes, " bytes of parked KV pages"));
    }
    return ParkingMemory(memory, [](std::byte* p) { std::free(p); });
  }
  // A parked page is [layer][kv][slot][kv_dim], the device tier's whole-page order.
  absl::Status ExportPages(std::span<const int32_t> pages, std::byte* out) const override {
    for (int32_t page : pages) {
      for (int32_t layer = 0; layer < layout_.num_layers; ++layer) {
        for (int32_t kv = 0; kv < 2; ++kv) {
          std::memcpy(out, Row({.page = page, .slot = 0}, layer, kv), PageRunBytes());
          out += PageRunBytes();
        }
      }
    }
    return absl::OkStatus();
  }
  absl::Status ImportPages(std::span<const int32_t> pages, const std::byte* in) override {
    for (int32_t page : pages) {
      for (int32_t layer = 0; layer < layout_.num_layers; ++layer) {
        for (int32_t kv = 0; kv < 2; ++kv) {
          std::memcpy(Row({.page = page, .slot = 0}, layer, kv), in, PageRunBytes());
          in += PageRunBytes();
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  size_t RowBytes() const { return static_cast<size_t>(layout_.kv_dim) * sizeof(float); }
  // One layer's K (or V) rows of one page: contiguous in a chunk.
  size_t PageRunBytes() const { return RowBytes() * static_cast<size_t>(layout_.block_size); }
  // A chunk is [layer][kv][page of the chunk][slot][kv_dim]: one layer's K (or V) rows of
  // the chunk's pages are one contiguous run.
  float* Row(SlotRef s, int32_t layer, int32_t kv) const {
    const int64_t run = int64_t{layout_.block_size} * layout_.kv_dim;  // a page's rows
    const int64_t in_chunk = s.page % pages_per_chunk_;
    return chunks_[s.page / pages_per_chunk_] +
           ((int64_t{layer} * 2 + kv) * pages_per_chunk_ + in_chunk) * run +
           int64_t{s.slot} * layout_.kv_dim;
  }
  // f(row, index into the [layer][kv][entry] order) for every row of the listed slots.
  template <typename F>
  void ForEachRow(std::span<const SlotRef> slots, F&& f) const {
    size_t index = 0;
    for (int32_t layer = 0; layer < layout_.num_layers; ++layer) {
      for (int32_t kv = 0; kv < 2; ++kv) {
        for (const SlotRef& s : slots)
          f(Row(s, layer, kv), index++);
      }
    }
  }

  // A chunk's bytes, whole 4 KiB pages (whole huge pages from 2 MiB up).
  size_t ChunkBytes() const {
    const size_t bytes = static_cast<size_t>(pages_per_chunk_ * layout_.page_bytes());
    const size_t unit = bytes >= kHugePage ? kHugePage : 4096;
    return (bytes + unit - 1) / unit * unit;
  }
  // Memory straight from the kernel: zero-filled as it is first touched (mapping a chunk does
  // not write all of it), given back to the system when unmapped, and from 2 MiB up aligned to
  // 2 MiB so that transparent huge pages can back it. nullptr when none can be had.
  static float* MapZeroed(size_t bytes) {
    const size_t alignment = bytes >= kHugePage ? kHugePage : 4096;
    const size_t padded = bytes + alignment - 4096;
    void* raw = mmap(nullptr, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + alignment - 1) / alignment * alignment;
    if (aligned > start) munmap(raw, aligned - start);  // the padding before and after
    if (const uintptr_t end = start + padded; end > aligned + bytes)
      munmap(reinterpret_cast<void*>(aligned + bytes), end - aligned - bytes);
    void* memory = reinterpret_cast<void*>(aligned);
    if (alignment == kHugePage) madvise(memory, bytes, MADV_HUGEPAGE);  // a hint; may be off
    return static_cast<float*>(memory);
  }

  PageLayout layout_;
  int32_t max_pages_ = 0;
  int32_t pages_per_chunk_ = 1;
  std::vector<float*> chunks_;  // sized once: RowsBase reads it unlocked; nullptr: unmapped
};

}  // namespace

std::unique_ptr<PageStorage> MakeHostPageStorage(PageLayout layout, int64_t budget_bytes) {
  return std::make_unique<HostPageStorage>(layout, budget_bytes);
}

BlockPool::BlockPool(std::unique_ptr<PageStorage> storage) : storage_(std::move(storage)) {
  const int32_t per_chunk = storage_->pages_per_chunk();
  refcounts_.assign(storage_->max_pages(), 0);
  used_in_chunk_.assign((storage_->max_pages() + per_chunk - 1) / per_chunk, -1);
}

absl::StatusOr<int32_t> BlockPool::Allocate() {
  std::lock_guard lock(mutex_);
  if (free_.empty()) {
    const auto unmapped = std::find(used_in_chunk_.begin(), used_in_chunk_.end(), -1);
    if (unmapped == used_in_chunk_.end()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the ", std::string(storage_->tier()), " KV pool is full: ", pages_in_use_, " pages of ",
          layout().page_bytes(), " bytes in use (budget ", budget_bytes(), " bytes)"));
    }
    const auto chunk = static_cast<int32_t>(unmapped - used_in_chunk_.begin());
    if (absl::Status mapped = storage_->MapChunk(chunk); !mapped.ok()) return mapped;
    *unmapped = 0;
    ++chunks_mapped_;
    const int32_t per_chunk = storage_->pages_per_chunk();
    const int32_t end = std::min(storage_->max_pages(), (chunk + 1) * per_chunk);
    for (int32_t page = chunk * per_chunk; page < end; ++page)
      free_.insert(page);
  }
  const int32_t page = *free_.begin();
  free_.erase(free_.begin());
  refcounts_[page] = 1;
  const int32_t chunk = page / storage_->pages_per_chunk();
  if (chunk == spare_chunk_) spare_chunk_ = -1;
  ++used_in_chunk_[chunk];
  ++pages_in_use_;
  return page;
}

void BlockPool::Retain(int32_t page) {
  std::lock_guard lock(mutex_);
  ++refcounts_[page];
}

void BlockPool::Release(int32_t page) {
  std::lock_guard lock(mutex_);
  if (--refcounts_[page] > 0) return;
  --pages_in_use_;
  const int32_t per_chunk = storage_->pages_per_chunk();
  const int32_t chunk = page / per_chunk;
  free_.insert(page);
  if (--used_in_chunk_[chunk] > 0) return;
  // An empty chunk goes back to the tier, so memory follows what sessions hold, except one
  // kept as a spare (the lower of two): a session at a chunk boundary that takes a page and
  // gives it back every step (a step run and dropped, a turn rolled back) would otherwise map,
  // zero and unmap a chunk each time (measured: a 4K decode step 2x slower).
  if (spare_chunk_ < 0) {
    spare_chunk_ = chunk;
    return;
  }
  const int32_t unmap = std::max(spare_chunk_, chunk);
  spare_chunk_ = std::min(spare_chunk_, chunk);
  const int32_t end = std::min(storage_->max_pages(), (unmap + 1) * per_chunk);
  free_.erase(free_.lower_bound(unmap * per_chunk), free_.lower_bound(end));
  storage_->UnmapChunk(unmap);
  used_in_chunk_[unmap] = -1;
  --chunks_mapped_;
}

int32_t BlockPool::RefCount(int32_t page) const {
  std::lock_guard lock(mutex_);
  return refcounts_[page];
}

int64_t BlockPool::pages_in_use() const {
  std::lock_guard lock(mutex_);
  return pages_in_use_;
}

int64_t BlockPool::bytes_mapped() const {
  std::lock_guard lock(mutex_);
  return int64_t{chunks_mapped_} * storage_->pages_per_chunk() * layout().page_bytes();
}

}  // namespace gistmem::memory
