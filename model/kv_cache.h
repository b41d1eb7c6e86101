// The KV cache of one sequence on the CPU: for every layer, one key row and one value row per
// entry (kv_dim floats each, fp32), plus each entry's stream position.
//
// Keys are stored already rotated by RoPE at their own position, so entries can be dropped
// without touching the others, and a kept entry's position never changes. A new token attends
// to every entry in the cache (plus the causal part of its own chunk): whoever removes entries
// (a memory policy) decides visibility.
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

  // All rows of layer `layer`: size() * kv_dim floats, entry-major.
  const float* keys(int64_t layer) const { return keys_[layer].data(); }
  const float* values(int64_t layer) const { return values_[layer].data(); }
  // One entry's row of one layer.
  std::span<const float> KeyRow(int64_t layer, int64_t entry) const {
    return {keys(layer) + entry * kv_dim_, static_cast<size_t>(kv_dim_)};
  }
  std::span<const float> ValueRow(int64_t layer, int64_t entry) const {
    return {values(layer) + entry * kv_dim_, static_cast<size_t>(kv_dim_)};
  }

  // Appends entries at `positions` (strictly increasing, after the last entry's position) to
  // every layer, zero-filled; the writer (the transformer, or a restore from storage) then
  // fills their rows through MutableKeys/MutableValues. Throws std::invalid_argument on bad
  // positions, leaving the cache unchanged.
  void Extend(std::span<const int64_t> positions);
  float* MutableKeys(int64_t layer, int64_t entry) { return &keys_[layer][entry * kv_dim_]; }
  float* MutableValues(int64_t layer, int64_t entry) { return &values_[layer][entry * kv_dim_]; }

  // Keeps the first n entries (undoes a cancelled turn). Throws std::out_of_range when
  // n is not in [0, size()].
  void Truncate(int64_t n);
  // Keeps only the listed entries, given as strictly increasing indices; rows and positions of
  // kept entries are unchanged. Throws std::invalid_argument on a bad index list.
  void Retain(std::span<const int64_t> entry_indices);

 private:
  int64_t kv_dim_;
  std::vector<int64_t> positions_;
  std::vector<std::vector<float>> keys_;    // [layer][entry * kv_dim + i]
  std::vector<std::vector<float>> values_;  // same layout
};

}  // namespace gistmem::model
