#include "model/kv_cache.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace gistmem::model {
namespace {

// Moves the rows at `entry_indices` (increasing) to the front, in order, and drops the rest.
void CompactRows(std::vector<float>& rows, std::span<const int64_t> entry_indices,
                 int64_t row_size) {
  int64_t kept = 0;
  for (int64_t index : entry_indices) {
    if (index != kept) {
      std::copy_n(rows.begin() + index * row_size, row_size, rows.begin() + kept * row_size);
    }
    ++kept;
  }
  rows.resize(kept * row_size);
}

}  // namespace

KvCache::KvCache(const ModelConfig& config)
    : kv_dim_(config.kv_dim()), keys_(config.num_layers), values_(config.num_layers) {}

void KvCache::Extend(std::span<const int64_t> positions) {
  int64_t last = positions_.empty() ? -1 : positions_.back();
  for (int64_t p : positions) {
    if (p <= last) {
      throw std::invalid_argument("KV cache positions must be non-negative and increase: " +
                                  std::to_string(p) + " after " + std::to_string(last));
    }
    last = p;
  }
  const size_t rows = (positions_.size() + positions.size()) * kv_dim_;
  for (auto& k : keys_)
    k.resize(rows);
  for (auto& v : values_)
    v.resize(rows);
  positions_.insert(positions_.end(), positions.begin(), positions.end());
}

void KvCache::Truncate(int64_t n) {
  if (n < 0 || n > size()) {
    throw std::out_of_range("KvCache::Truncate(" + std::to_string(n) + ") on a cache of " +
                            std::to_string(size()) + " entries");
  }
  positions_.resize(n);
  for (auto& k : keys_)
    k.resize(n * kv_dim_);
  for (auto& v : values_)
    v.resize(n * kv_dim_);
}

void KvCache::Retain(std::span<const int64_t> entry_indices) {
  int64_t previous = -1;
  for (int64_t index : entry_indices) {
    if (index <= previous || index >= size()) {
      throw std::invalid_argument("KvCache::Retain: index " + std::to_string(index) +
                                  " is not increasing or not inside the cache of " +
                                  std::to_string(size()) + " entries");
    }
    previous = index;
  }
  for (auto& k : keys_)
    CompactRows(k, entry_indices, kv_dim_);
  for (auto& v : values_)
    CompactRows(v, entry_indices, kv_dim_);
  int64_t kept = 0;
  for (int64_t index : entry_indices)
    positions_[kept++] = positions_[index];
  positions_.resize(kept);
}

}  // namespace gistmem::model
