// The KV cache of one sequence on the CPU: for every layer, one key row and one value row per
// entry (kv_dim floats each, fp32), plus each entry's stream position.
//
// Keys are stored already rotated by RoPE at their own position, so entries can be dropped
// without touching the others, and a kept entry's position never changes. A new token attends
// to every entry in the cache (plus the causal part of its own chunk): whoever removes entries
// (a memory policy) decides visibility.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"

namespace gistmem::model {

// When queries may see an entry, on the session's "raw clock": the number of raw (non-gist)
// tokens of the stream up to and including the query. A memory policy sets it for each entry
// (memory/policy.h says how); the model only applies it, on top of causality.
struct EntryVisibility {
  static constexpr int64_t kForever = std::numeric_limits<int64_t>::max();
  int64_t from_clock = 0;
  int64_t until_clock = kForever;

  bool VisibleAt(int64_t clock) const { return from_clock <= clock && clock <= until_clock; }
  bool operator==(const EntryVisibility&) const = default;
};

class KvCache;

// A read-only block of entries computed elsewhere (a document compressed once) that a cache
// attends to as if its entries stood at `position_offset` + their own positions. Their keys
// carry RoPE for their own positions, so the query is rotated back by position_offset for
// them (RoPE is relative: gist-method.md section 5); one copy serves every cache attaching it.
// Every query after the attach point sees all of its entries.
struct SharedSegment {
  std::shared_ptr<const KvCache> entries;
  int64_t position_offset = 0;
  int64_t stream_tokens = 0;  // positions the segment takes in the attaching stream
  std::string label;          // who it is (a document id), for the attaching side's records
};

class KvCache {
 public:
  explicit KvCache(const ModelConfig& config);
  // An empty cache of this one's shape (no entries, no attached segments).
  KvCache EmptyLike() const;

  int64_t size() const { return static_cast<int64_t>(positions_.size()); }
  int64_t num_layers() const { return static_cast<int64_t>(keys_.size()); }
  int64_t kv_dim() const { return kv_dim_; }
  const std::vector<int64_t>& positions() const { return positions_; }
  const std::vector<EntryVisibility>& visibility() const { return visibility_; }
  // Bytes the cache's own rows occupy in memory (allocated, not only used).
  int64_t allocated_bytes() const;
  // The position the next token of the stream may take: past every entry ever appended.
  int64_t next_position() const { return next_position_; }

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

  // Appends entries at `positions` (strictly increasing, from next_position() on) to every
  // layer, zero-filled; the writer (the transformer, or a restore from storage) then fills
  // their rows through MutableKeys/MutableValues. `visibility` is one per position, or empty
  // for entries visible to every later query. Throws std::invalid_argument on bad positions
  // or a visibility list of another length, leaving the cache unchanged.
  void Extend(std::span<const int64_t> positions, std::span<const EntryVisibility> visibility = {});
  // Appends one entry whose key and value rows are, in every layer, the mean of the rows of
  // `sources` (a pooled entry). Its position may lie before next_position(); the rows are
  // already rotated, so the position only orders it causally. Returns its index.
  int64_t AppendMean(std::span<const int64_t> sources, int64_t position,
                     EntryVisibility visibility);
  // Appends one zero-filled entry at any position >= 0 (a restore from storage, in the order
  // the entries were made); returns its index.
  int64_t AppendUnordered(int64_t position, EntryVisibility visibility);
  // Appends a copy of entry `entry` of `from` (same shape), rows, position and visibility.
  void AppendCopy(const KvCache& from, int64_t entry);
  float* MutableKeys(int64_t layer, int64_t entry) { return &keys_[layer][entry * kv_dim_]; }
  float* MutableValues(int64_t layer, int64_t entry) { return &values_[layer][entry * kv_dim_]; }

  // Keeps the first n entries (undoes a cancelled turn); next_position() goes back to past
  // the last kept entry. Throws std::out_of_range when n is not in [0, size()].
  void Truncate(int64_t n);
  // Keeps only the listed entries, given as strictly increasing indices; rows and positions of
  // kept entries are unchanged, and so is next_position(). Throws std::invalid_argument on a
  // bad index list.
  void Retain(std::span<const int64_t> entry_indices);
  // Sets where the stream goes on (a cache rebuilt after entries were dropped); it may not
  // go back before an entry it holds.
  void SetNextPosition(int64_t position);

  // Attaches `segment` (at next_position(), or where a restore says); next_position() moves
  // past its stream_tokens. Copies of the cache share the segment.
  void Attach(SharedSegment segment);
  const std::vector<SharedSegment>& shared() const { return shared_; }

 private:
  KvCache(int64_t kv_dim, int64_t num_layers)
      : kv_dim_(kv_dim), keys_(num_layers), values_(num_layers) {}

  int64_t kv_dim_;
  std::vector<int64_t> positions_;
  std::vector<EntryVisibility> visibility_;
  int64_t next_position_ = 0;
  std::vector<SharedSegment> shared_;
  std::vector<std::vector<float>> keys_;    // [layer][entry * kv_dim + i]
  std::vector<std::vector<float>> values_;  // same layout
};

}  // namespace gistmem::model
