// memory::BlockPool over host pages: reference counts, lowest-free-first allocation, the byte
// budget, chunks mapped as needed and given back when they empty, and the page storage's row
// operations (export, import, copy, mean) in the store's [layer][kv][entry][kv_dim] order.
#include "memory/block_pool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "memory/kv_layout.h"

namespace gistmem::memory {
namespace {

using ::testing::HasSubstr;

// 32 * 2 * 16 * 256 floats = 1 MiB a page: 4 pages to a host chunk (about 4 MiB).
constexpr PageLayout kBigPages{
    .block_size = 16, .num_layers = 32, .kv_dim = 256, .element_bytes = 4};
// Small pages for the row operations: 2 layers, 4 slots, 3 values a row.
constexpr PageLayout kSmallPages{.block_size = 4, .num_layers = 2, .kv_dim = 3, .element_bytes = 4};

BlockPool MakePool(const PageLayout& layout, int64_t pages) {
  return BlockPool(MakeHostPageStorage(layout, pages * layout.page_bytes()));
}

int32_t MustAllocate(BlockPool& pool) {
  absl::StatusOr<int32_t> page = pool.Allocate();
  EXPECT_TRUE(page.ok()) << page.status();
  return page.ok() ? *page : -1;
}

TEST(BlockPoolTest, LayoutArithmetic) {
  EXPECT_EQ(kSmallPages.page_elements(), 2 * 2 * 4 * 3);
  EXPECT_EQ(kSmallPages.page_bytes(), 2 * 2 * 4 * 3 * 4);
  // [layer][kv][slot][kv_dim]
  EXPECT_EQ(kSmallPages.RowOffset(0, 0, 0), 0);
  EXPECT_EQ(kSmallPages.RowOffset(0, 0, 1), 3);
  EXPECT_EQ(kSmallPages.RowOffset(0, 1, 0), 4 * 3);
  EXPECT_EQ(kSmallPages.RowOffset(1, 0, 2), (2 * 4 + 2) * 3);
  EXPECT_EQ(kSmallPages.RowOffset(1, 1, 3), kSmallPages.page_elements() - 3);
}

TEST(BlockPoolTest, RefcountsAndLowestFreeFirst) {
  BlockPool pool = MakePool(kSmallPages, 8);
  EXPECT_EQ(pool.tier(), "host");
  EXPECT_EQ(pool.budget_bytes(), 8 * kSmallPages.page_bytes());
  EXPECT_EQ(pool.pages_in_use(), 0);
  EXPECT_EQ(MustAllocate(pool), 0);
  EXPECT_EQ(MustAllocate(pool), 1);
  EXPECT_EQ(MustAllocate(pool), 2);
  EXPECT_EQ(pool.pages_in_use(), 3);
  EXPECT_EQ(pool.bytes_in_use(), 3 * kSmallPages.page_bytes());
  for (int32_t page : {0, 1, 2})
    EXPECT_EQ(pool.RefCount(page), 1);

  // A second holder keeps a page in use through the first one's release.
  pool.Retain(1);
  EXPECT_EQ(pool.RefCount(1), 2);
  pool.Release(1);
  EXPECT_EQ(pool.RefCount(1), 1);
  EXPECT_EQ(pool.pages_in_use(), 3);
  EXPECT_EQ(MustAllocate(pool), 3);  // page 1 is still taken

  // Freed pages come back lowest first.
  pool.Release(1);
  pool.Release(0);
  EXPECT_EQ(pool.RefCount(1), 0);
  EXPECT_EQ(pool.pages_in_use(), 2);
  EXPECT_EQ(MustAllocate(pool), 0);
  EXPECT_EQ(MustAllocate(pool), 1);
  EXPECT_EQ(MustAllocate(pool), 4);
  EXPECT_EQ(pool.pages_in_use(), 5);
}

TEST(BlockPoolTest, TheBudgetIsAHardLimitNamedInTheError) {
  BlockPool pool = MakePool(kSmallPages, 5);
  for (int32_t i = 0; i < 5; ++i)
    EXPECT_EQ(MustAllocate(pool), i);
  const absl::StatusOr<int32_t> over = pool.Allocate();
  ASSERT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status().message(), HasSubstr("budget"));
  EXPECT_THAT(over.status().message(), HasSubstr(std::to_string(pool.budget_bytes())));
  EXPECT_THAT(over.status().message(), HasSubstr("host"));
  EXPECT_EQ(pool.pages_in_use(), 5);
  // A page given back can be had again.
  pool.Release(3);
  EXPECT_EQ(MustAllocate(pool), 3);
  EXPECT_EQ(pool.Allocate().status().code(), absl::StatusCode::kResourceExhausted);

  // A budget smaller than one page holds nothing.
  BlockPool empty(MakeHostPageStorage(kSmallPages, kSmallPages.page_bytes() - 1));
  EXPECT_EQ(empty.budget_bytes(), 0);
  EXPECT_EQ(empty.Allocate().status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(BlockPoolTest, ChunksAreMappedAsNeededAndUnmappedWhenEmpty) {
  BlockPool pool = MakePool(kBigPages, 10);  // chunks of 4, 4 and 2 pages
  ASSERT_EQ(pool.storage().pages_per_chunk(), 4);
  const int64_t chunk_bytes = 4 * kBigPages.page_bytes();
  EXPECT_EQ(pool.bytes_mapped(), 0);
  std::vector<int32_t> pages;
  for (int32_t i = 0; i < 10; ++i)
    pages.push_back(MustAllocate(pool));
  EXPECT_EQ(pool.bytes_mapped(), 3 * chunk_bytes);

  // Rows written into page 9 (the last chunk) ...
  const SlotRef slot{.page = 9, .slot = 5};
  const std::vector<float> sevens(2 * kBigPages.num_layers * kBigPages.kv_dim, 7.f);
  pool.storage().ImportRows(std::span(&slot, 1), sevens.data());
  // ... stay while a page of their chunk is in use; the first chunk to empty stays mapped as
  // the spare, and once a second one empties the higher of the two goes back.
  pool.Release(8);
  EXPECT_EQ(pool.bytes_mapped(), 3 * chunk_bytes);
  pool.Release(9);
  EXPECT_EQ(pool.bytes_mapped(), 3 * chunk_bytes);  // chunk 2 is the spare
  for (int32_t page : {4, 5, 6, 7})
    pool.Release(page);
  EXPECT_EQ(pool.bytes_mapped(), 2 * chunk_bytes);  // chunk 1 the spare, chunk 2 unmapped
  // Releasing a page of a chunk that still has pages in use unmaps nothing.
  pool.Release(1);
  EXPECT_EQ(pool.bytes_mapped(), 2 * chunk_bytes);
  // Lowest first: page 1, then the spare's pages (no mapping), then a fresh chunk, zeroed.
  for (int32_t page : {1, 4, 5, 6, 7, 8, 9})
    EXPECT_EQ(MustAllocate(pool), page);
  EXPECT_EQ(pool.bytes_mapped(), 3 * chunk_bytes);
  std::vector<float> out(2 * kBigPages.num_layers * kBigPages.kv_dim, -1.f);
  pool.storage().ExportRows(std::span(&slot, 1), out.data());
  EXPECT_EQ(out, std::vector<float>(out.size(), 0.f));

  // A session at a chunk boundary that takes a page and gives it back, step after step, keeps
  // the chunk mapped rather than mapping and zeroing it each time.
  for (int32_t page = 4; page < 10; ++page)
    pool.Release(page);
  EXPECT_EQ(pool.bytes_mapped(), 2 * chunk_bytes);
  for (int step = 0; step < 3; ++step) {
    EXPECT_EQ(MustAllocate(pool), 4);
    EXPECT_EQ(pool.bytes_mapped(), 2 * chunk_bytes);
    pool.Release(4);
    EXPECT_EQ(pool.bytes_mapped(), 2 * chunk_bytes);
  }

  for (int32_t page : {0, 1, 2, 3})
    pool.Release(page);
  EXPECT_EQ(pool.pages_in_use(), 0);
  EXPECT_EQ(pool.bytes_mapped(), chunk_bytes);  // the spare alone
  // The whole budget can be had, the last (short) chunk included.
  for (int32_t i = 0; i < 10; ++i)
    EXPECT_EQ(MustAllocate(pool), i);
  EXPECT_EQ(pool.Allocate().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_GE(pool.bytes_mapped(), 10 * kBigPages.page_bytes());
}

// Distinct values for every row of `count` entries, [layer][kv][entry][kv_dim].
std::vector<float> Rows(const PageLayout& layout, size_t count, float base) {
  std::vector<float> rows(2 * count * layout.num_layers * layout.kv_dim);
  for (size_t i = 0; i < rows.size(); ++i)
    rows[i] = base + static_cast<float>(i) * 0.25f;
  return rows;
}

TEST(BlockPoolTest, RowsRoundTripInTheStoreLayout) {
  BlockPool pool = MakePool(kSmallPages, 4);
  for (int32_t i = 0; i < 2; ++i)
    MustAllocate(pool);
  PageStorage& storage = pool.storage();
  const std::vector<SlotRef> slots = {{0, 1}, {1, 3}, {0, 0}};
  const std::vector<float> in = Rows(kSmallPages, slots.size(), 1.f);
  storage.ImportRows(slots, in.data());
  std::vector<float> out(in.size());
  storage.ExportRows(slots, out.data());
  EXPECT_EQ(out, in);

  // In the page: layer l, K or V, entry e's row at RowsBase(page, l, kv) + slot * kv_dim.
  const int32_t d = kSmallPages.kv_dim;
  for (int32_t l = 0; l < kSmallPages.num_layers; ++l) {
    for (int32_t kv = 0; kv < 2; ++kv) {
      for (size_t e = 0; e < slots.size(); ++e) {
        const auto* rows = static_cast<const float*>(storage.RowsBase(slots[e].page, l, kv));
        for (int32_t i = 0; i < d; ++i) {
          EXPECT_EQ(rows[slots[e].slot * d + i], in[((l * 2 + kv) * slots.size() + e) * d + i])
              << "layer " << l << " kv " << kv << " entry " << e;
        }
      }
    }
  }

  // Other slots were not touched.
  const SlotRef other{1, 0};
  std::vector<float> zeros(2 * kSmallPages.num_layers * d);
  storage.ExportRows(std::span(&other, 1), zeros.data());
  EXPECT_EQ(zeros, std::vector<float>(zeros.size(), 0.f));
}

TEST(BlockPoolTest, CopySlotsAndMeanOfSlots) {
  BlockPool pool = MakePool(kSmallPages, 4);
  for (int32_t i = 0; i < 3; ++i)
    MustAllocate(pool);
  PageStorage& storage = pool.storage();
  const std::vector<SlotRef> from = {{0, 0}, {0, 1}, {1, 2}};
  const std::vector<float> in = Rows(kSmallPages, from.size(), -3.f);
  storage.ImportRows(from, in.data());

  const std::vector<SlotRef> to = {{2, 3}, {2, 0}, {1, 1}};
  storage.CopySlots(from, to);
  std::vector<float> copied(in.size());
  storage.ExportRows(to, copied.data());
  EXPECT_EQ(copied, in);

  // dest = (a + b + c) summed in list order, then scaled, in every layer, K and V.
  const SlotRef dest{2, 2};
  storage.MeanOfSlots(from, dest);
  std::vector<float> mean(2 * kSmallPages.num_layers * kSmallPages.kv_dim);
  storage.ExportRows(std::span(&dest, 1), mean.data());
  const int32_t d = kSmallPages.kv_dim;
  const size_t n = from.size();
  for (int32_t block = 0; block < 2 * kSmallPages.num_layers; ++block) {
    for (int32_t i = 0; i < d; ++i) {
      float sum = 0.f;
      for (size_t e = 0; e < n; ++e)
        sum += in[(block * n + e) * d + i];
      EXPECT_EQ(mean[block * d + i], sum * (1.0f / 3.0f)) << "row block " << block << ", " << i;
    }
  }
  // The sources are unchanged.
  std::vector<float> sources(in.size());
  storage.ExportRows(from, sources.data());
  EXPECT_EQ(sources, in);
}

}  // namespace
}  // namespace gistmem::memory
