// KvCache: rows and positions survive Extend, Truncate and Retain in every layer; invalid
// positions and indices are rejected and leave the cache as it was.
#include "model/kv_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <span>
#include <stdexcept>
#include <vector>

#include "model/config.h"

namespace gistmem::model {
namespace {

using Positions = std::vector<int64_t>;

ModelConfig SmallConfig() {
  ModelConfig c;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 4;  // kv_dim 8
  return c;
}

// A value that identifies (layer, keys or values, tag, d): rows can be traced after moves.
float Mark(int64_t layer, bool is_value, int64_t tag, int64_t d) {
  return static_cast<float>(layer * 100000 + (is_value ? 50000 : 0) + tag * 100 + d);
}

// Extends by `positions` and writes each new entry's rows, tagged by its position.
void Append(KvCache& cache, const Positions& positions) {
  const int64_t base = cache.size();
  cache.Extend(positions);
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    for (size_t e = 0; e < positions.size(); ++e) {
      for (int64_t d = 0; d < cache.kv_dim(); ++d) {
        cache.MutableKeys(l, base + e)[d] = Mark(l, false, positions[e], d);
        cache.MutableValues(l, base + e)[d] = Mark(l, true, positions[e], d);
      }
    }
  }
}

// Every entry's rows still carry the tag of the position it was written for.
void ExpectRowsMatchPositions(const KvCache& cache, const Positions& positions) {
  ASSERT_EQ(cache.positions(), positions);
  ASSERT_EQ(cache.size(), static_cast<int64_t>(positions.size()));
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    for (size_t e = 0; e < positions.size(); ++e) {
      for (int64_t d = 0; d < cache.kv_dim(); ++d) {
        ASSERT_EQ(cache.keys(l)[e * cache.kv_dim() + d], Mark(l, false, positions[e], d))
            << "layer " << l << " entry " << e << " dim " << d;
        ASSERT_EQ(cache.values(l)[e * cache.kv_dim() + d], Mark(l, true, positions[e], d))
            << "layer " << l << " entry " << e << " dim " << d;
      }
    }
  }
}

TEST(KvCacheTest, StartsEmptyWithTheConfigShape) {
  const KvCache cache(SmallConfig());
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.num_layers(), 3);
  EXPECT_EQ(cache.kv_dim(), 8);
  EXPECT_TRUE(cache.positions().empty());
}

TEST(KvCacheTest, ExtendZeroFillsAndKeepsEarlierRows) {
  KvCache cache(SmallConfig());
  Append(cache, {0, 1, 2});
  cache.Extend(Positions{3, 4});
  ASSERT_EQ(cache.positions(), (Positions{0, 1, 2, 3, 4}));
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    for (int64_t d = 0; d < cache.kv_dim(); ++d) {
      // The three written entries are intact ...
      EXPECT_EQ(cache.keys(l)[2 * cache.kv_dim() + d], Mark(l, false, 2, d));
      EXPECT_EQ(cache.values(l)[0 * cache.kv_dim() + d], Mark(l, true, 0, d));
      // ... and the two new ones are zero until written.
      EXPECT_EQ(cache.keys(l)[3 * cache.kv_dim() + d], 0.f);
      EXPECT_EQ(cache.values(l)[4 * cache.kv_dim() + d], 0.f);
    }
  }
}

TEST(KvCacheTest, ExtendAcceptsGapsAndEmptySpans) {
  KvCache cache(SmallConfig());
  Append(cache, {2, 7});
  Append(cache, {});
  Append(cache, {8, 100});
  ExpectRowsMatchPositions(cache, {2, 7, 8, 100});
}

TEST(KvCacheTest, ExtendRejectsNonIncreasingPositions) {
  KvCache cache(SmallConfig());
  Append(cache, {0, 1, 2});
  // Not after the cache's last entry.
  EXPECT_THROW(cache.Extend(Positions{2}), std::invalid_argument);
  EXPECT_THROW(cache.Extend(Positions{1, 5}), std::invalid_argument);
  // Not increasing inside the span.
  EXPECT_THROW(cache.Extend(Positions{5, 5}), std::invalid_argument);
  EXPECT_THROW(cache.Extend(Positions{6, 4}), std::invalid_argument);
  // A fresh cache starts after -1: negative positions are rejected.
  KvCache fresh(SmallConfig());
  EXPECT_THROW(fresh.Extend(Positions{-1}), std::invalid_argument);
  EXPECT_EQ(fresh.size(), 0);
  // Nothing changed.
  ExpectRowsMatchPositions(cache, {0, 1, 2});
  try {
    cache.Extend(Positions{3, 3});
    FAIL() << "accepted a repeated position";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("3 after 3"));
  }
}

TEST(KvCacheTest, TruncateKeepsThePrefix) {
  KvCache cache(SmallConfig());
  Append(cache, {0, 1, 2, 3, 4, 5});
  cache.Truncate(6);  // no-op
  ExpectRowsMatchPositions(cache, {0, 1, 2, 3, 4, 5});
  cache.Truncate(4);
  ExpectRowsMatchPositions(cache, {0, 1, 2, 3});
  // Positions continue from the new end, and the regrown rows are fresh zeros.
  cache.Extend(Positions{4});
  EXPECT_EQ(cache.keys(1)[4 * cache.kv_dim()], 0.f);
  cache.Truncate(4);
  Append(cache, {10, 11});
  ExpectRowsMatchPositions(cache, {0, 1, 2, 3, 10, 11});
  cache.Truncate(0);
  ExpectRowsMatchPositions(cache, {});
  Append(cache, {0});  // an emptied cache accepts position 0 again
  ExpectRowsMatchPositions(cache, {0});
}

TEST(KvCacheTest, TruncateRejectsOutOfRange) {
  KvCache cache(SmallConfig());
  Append(cache, {0, 1, 2});
  EXPECT_THROW(cache.Truncate(4), std::out_of_range);
  EXPECT_THROW(cache.Truncate(-1), std::out_of_range);
  ExpectRowsMatchPositions(cache, {0, 1, 2});
}

TEST(KvCacheTest, RetainKeepsTheListedEntriesAndTheirPositions) {
  KvCache cache(SmallConfig());
  Append(cache, {0, 1, 2, 3, 4, 5, 6, 7});
  cache.Retain(Positions{0, 2, 3, 6});
  ExpectRowsMatchPositions(cache, {0, 2, 3, 6});
  // Later entries continue after the last kept position, not after the count.
  EXPECT_THROW(cache.Extend(Positions{5}), std::invalid_argument);
  Append(cache, {8, 9});
  ExpectRowsMatchPositions(cache, {0, 2, 3, 6, 8, 9});
  cache.Retain(Positions{1, 4, 5});
  ExpectRowsMatchPositions(cache, {2, 8, 9});
}

TEST(KvCacheTest, RetainAllIsANoOpAndRetainNoneEmpties) {
  KvCache cache(SmallConfig());
  Append(cache, {3, 4, 9});
  cache.Retain(Positions{0, 1, 2});
  ExpectRowsMatchPositions(cache, {3, 4, 9});
  cache.Retain(Positions{});
  ExpectRowsMatchPositions(cache, {});
}

TEST(KvCacheTest, RetainDropsAPrefix) {
  KvCache cache(SmallConfig());
  Append(cache, {0, 1, 2, 3, 4});
  cache.Retain(Positions{3, 4});
  ExpectRowsMatchPositions(cache, {3, 4});
}

TEST(KvCacheTest, RetainRejectsBadIndicesAndChangesNothing) {
  KvCache cache(SmallConfig());
  Append(cache, {0, 1, 2, 3});
  for (const Positions& bad : {Positions{4}, Positions{0, 5}, Positions{-1, 2}, Positions{2, 1},
                               Positions{1, 1}, Positions{0, 1, 2, 3, 4}}) {
    EXPECT_THROW(cache.Retain(bad), std::invalid_argument) << ::testing::PrintToString(bad);
    ExpectRowsMatchPositions(cache, {0, 1, 2, 3});
  }
}

TEST(KvCacheTest, LayersAreIndependent) {
  KvCache cache(SmallConfig());
  cache.Extend(Positions{0});
  cache.MutableKeys(1, 0)[3] = 5.f;
  cache.MutableValues(2, 0)[7] = -1.f;
  EXPECT_EQ(cache.keys(0)[3], 0.f);
  EXPECT_EQ(cache.keys(1)[3], 5.f);
  EXPECT_EQ(cache.keys(2)[3], 0.f);
  EXPECT_EQ(cache.values(1)[7], 0.f);
  EXPECT_EQ(cache.values(2)[7], -1.f);
  EXPECT_EQ(cache.values(1)[3], 0.f);  // keys and values are separate rows
}

TEST(KvCacheTest, RowAccessorsFollowRetain) {
  KvCache cache(SmallConfig());
  Append(cache, {0, 1, 2, 3});
  cache.Retain(Positions{1, 3});
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    const std::span<const float> key = cache.KeyRow(l, 1), value = cache.ValueRow(l, 1);
    ASSERT_EQ(static_cast<int64_t>(key.size()), cache.kv_dim());
    ASSERT_EQ(static_cast<int64_t>(value.size()), cache.kv_dim());
    for (int64_t d = 0; d < cache.kv_dim(); ++d) {
      EXPECT_EQ(key[d], Mark(l, false, 3, d));
      EXPECT_EQ(value[d], Mark(l, true, 3, d));
    }
  }
}

TEST(KvCacheTest, RetainGivesFreedMemoryBack) {
  KvCache cache(SmallConfig());
  std::vector<int64_t> positions(20000);
  std::iota(positions.begin(), positions.end(), 0);
  cache.Extend(positions);
  const int64_t peak = cache.allocated_bytes();
  cache.Retain(Positions{5, 19999});
  EXPECT_EQ(cache.size(), 2);
  EXPECT_LT(cache.allocated_bytes(), peak / 100);
  EXPECT_EQ(cache.next_position(), 20000);  // positions are never reused
}

TEST(KvCacheTest, AppendMeanAveragesEveryLayersRows) {
  KvCache cache(SmallConfig());
  Append(cache, {0, 1, 2});
  const int64_t pooled = cache.AppendMean(Positions{0, 2}, 2, {.from_clock = 9});
  EXPECT_EQ(cache.positions()[pooled], 2);
  EXPECT_EQ(cache.visibility()[pooled].from_clock, 9);
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    for (int64_t d = 0; d < cache.kv_dim(); ++d) {
      EXPECT_FLOAT_EQ(cache.KeyRow(l, pooled)[d],
                      (Mark(l, false, 0, d) + Mark(l, false, 2, d)) / 2);
      EXPECT_FLOAT_EQ(cache.ValueRow(l, pooled)[d],
                      (Mark(l, true, 0, d) + Mark(l, true, 2, d)) / 2);
    }
  }
}

}  // namespace
}  // namespace gistmem::model
