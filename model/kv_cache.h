// The KV cache of one sequence on the CPU: for every layer, one key row and one value row per
// entry (kv_dim floats each), plus each entry's stream position.
//
// Keys are stored already rotated by RoPE at their own position, so entries can be dropped
// without touching the others. A new token attends to every entry in the cache (plus the
// causal part of its own chunk): whoever removes entries (a memory policy) decides visibility.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"

namespace gistmem::model {

class KvCache {
 public:
  explicit KvCache(const ModelConfig& config);

  int64_t size() const { return static_cast<int64_t>(positions_.size()); }
  int64_t num_layers() const { return static_cast<int64_t>(keys_.size()); }
  int64_t kv_dim() const { return kv_dim_; }
  const std::vector<int64_t>& positions() const { return positions_; }

  // Rows of layer `layer`: size() * kv_dim floats, entry-major.
  const float* keys(int64_t layer) const { return keys_[layer].data(); }
  const float* values(int64_t layer) const { return values_[layer].data(); }

  // Adds `count` entries at `positions` to every layer, zero-filled; the transformer then
  // writes their rows through MutableKeys/MutableValues. Positions must keep increasing.
  void Extend(std::span<const int64_t> positions);
  float* MutableKeys(int64_t layer, int64_t entry) { return &keys_[layer][entry * kv_dim_]; }
  float* MutableValues(int64_t layer, int64_t entry) { return &values_[layer][entry * kv_dim_]; }

  // Keeps the first n entries (undoes a cancelled turn).
  void Truncate(int64_t n);
  // Keeps only the listed entries, in increasing index order; positions are unchanged.
  void Retain(std::span<const int64_t> entry_indices);

 private:
  int64_t kv_dim_;
  std::vector<int64_t> positions_;
  std::vector<std::vector<float>> keys_;
  std::vector<std::vector<float>> values_;
};

}  // namespace gistmem::model
