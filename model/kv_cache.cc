#include "model/kv_cache.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace gistmem::model {

KvCache::KvCache(const ModelConfig& config)
    : kv_dim_(config.kv_dim()), keys_(config.num_layers), values_(config.num_layers) {}

void KvCache::Extend(std::span<const int64_t> positions) {
  int64_t last = positions_.empty() ? -1 : positions_.back();
  for (int64_t p : positions) {
    if (p <= last) {
      throw std::invalid_argument("KV cache positions must increase: " + std::to_string(p) +
                                  " after " + std::to_string(last));
    }
    last = p;
  }
  positions_.insert(positions_.end(), positions.begin(), positions.end());
  for (auto& k : keys_)
    k.resize(positions_.size() * kv_dim_);
  for (auto& v : values_)
    v.resize(positions_.size() * kv_dim_);
}

void KvCache::Truncate(int64_t n) {
  if (n < 0 || n > size()) throw std::out_of_range("KvCache::Truncate beyond the cache");
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
      throw std::invalid_argument("KvCache::Retain needs increasing indices inside the cache");
    }
    previous = index;
  }
  auto compact = [&](std::vector<float>& rows) {
    int64_t out = 0;
    for (int64_t index : entry_indices) {
      std::copy_n(rows.begin() + index * kv_dim_, kv_dim_, rows.begin() + out * kv_dim_);
      ++out;
    }
    rows.resize(out * kv_dim_);
  };
  for (auto& k : keys_)
    compact(k);
  for (auto& v : values_)
    compact(v);
  std::vector<int64_t> kept;
  kept.reserve(entry_indices.size());
  for (int64_t index : entry_indices)
    kept.push_back(positions_[index]);
  positions_ = std::move(kept);
}

}  // namespace gistmem::model
