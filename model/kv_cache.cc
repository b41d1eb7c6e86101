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
  // Freed entries go back to the allocator once they are most of the buffer, so a session's
  // memory follows what its policy keeps rather than its peak.
  if (rows.capacity() > 2 * rows.size() + 4096) rows.shrink_to_fit();
}

}  // namespace

KvCache::KvCache(const ModelConfig& config)
    : kv_dim_(config.kv_dim()), keys_(config.num_layers), values_(config.num_layers) {}

KvCache KvCache::EmptyLike() const {
  return KvCache(kv_dim_, num_layers());
}

void KvCache::Extend(std::span<const int64_t> positions,
                     std::span<const EntryVisibility> visibility) {
  if (!visibility.empty() && visibility.size() != positions.size()) {
    throw std::invalid_argument("KV cache: " + std::to_string(visibility.size()) +
                                " visibility rules for " + std::to_string(positions.size()) +
                                " entries");
  }
  int64_t last = next_position_ - 1;
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
  if (visibility.empty()) {
    visibility_.resize(positions_.size());
  } else {
    visibility_.insert(visibility_.end(), visibility.begin(), visibility.end());
  }
  if (!positions.empty()) next_position_ = positions.back() + 1;
}

int64_t KvCache::AppendMean(std::span<const int64_t> sources, int64_t position,
                            EntryVisibility visibility) {
  if (sources.empty() || position < 0) {
    throw std::invalid_argument("KvCache::AppendMean needs sources and a position >= 0");
  }
  for (int64_t s : sources) {
    if (s < 0 || s >= size()) {
      throw std::invalid_argument("KvCache::AppendMean: source " + std::to_string(s) +
                                  " is not inside the cache of " + std::to_string(size()));
    }
  }
  const int64_t entry = size();
  const float scale = 1.0f / static_cast<float>(sources.size());
  for (auto* rows : {&keys_, &values_}) {
    for (std::vector<float>& layer : *rows) {
      layer.resize((entry + 1) * kv_dim_, 0.f);
      float* out = &layer[entry * kv_dim_];
      // Sum in source order, then scale: the order the PyTorch reference's mean uses.
      for (int64_t s : sources) {
        const float* in = &layer[s * kv_dim_];
        for (int64_t i = 0; i < kv_dim_; ++i)
          out[i] += in[i];
      }
      for (int64_t i = 0; i < kv_dim_; ++i)
        out[i] *= scale;
    }
  }
  positions_.push_back(position);
  visibility_.push_back(visibility);
  next_position_ = std::max(next_position_, position + 1);
  return entry;
}

int64_t KvCache::AppendUnordered(int64_t position, EntryVisibility visibility) {
  if (position < 0) throw std::invalid_argument("KvCache::AppendUnordered: negative position");
  const int64_t entry = size();
  for (auto& k : keys_)
    k.resize((entry + 1) * kv_dim_);
  for (auto& v : values_)
    v.resize((entry + 1) * kv_dim_);
  positions_.push_back(position);
  visibility_.push_back(visibility);
  next_position_ = std::max(next_position_, position + 1);
  return entry;
}

void KvCache::AppendCopy(const KvCache& from, int64_t entry) {
  if (from.kv_dim_ != kv_dim_ || from.num_layers() != num_layers()) {
    throw std::invalid_argument("KvCache::AppendCopy from a cache of another shape");
  }
  if (entry < 0 || entry >= from.size()) throw std::out_of_range("KvCache::AppendCopy: entry");
  for (int64_t l = 0; l < num_layers(); ++l) {
    const auto row = [&](const std::vector<float>& layer) {
      return layer.begin() + entry * kv_dim_;
    };
    keys_[l].insert(keys_[l].end(), row(from.keys_[l]), row(from.keys_[l]) + kv_dim_);
    values_[l].insert(values_[l].end(), row(from.values_[l]), row(from.values_[l]) + kv_dim_);
  }
  positions_.push_back(from.positions_[entry]);
  visibility_.push_back(from.visibility_[entry]);
  next_position_ = std::max(next_position_, from.positions_[entry] + 1);
}

void KvCache::Attach(SharedSegment segment) {
  if (!segment.entries || segment.entries->kv_dim_ != kv_dim_ ||
      segment.entries->num_layers() != num_layers()) {
    throw std::invalid_argument("KvCache::Attach: a segment of another shape");
  }
  if (segment.position_offset < 0 || segment.stream_tokens < 1) {
    throw std::invalid_argument("KvCache::Attach: a segment must sit at a position and take some");
  }
  next_position_ = std::max(next_position_, segment.position_offset + segment.stream_tokens);
  shared_.push_back(std::move(segment));
}

void KvCache::SetNextPosition(int64_t position) {
  for (const SharedSegment& s : shared_) {
    if (s.position_offset + s.stream_tokens > position) {
      throw std::invalid_argument("KvCache::SetNextPosition before an attached segment's end");
    }
  }
  for (int64_t p : positions_) {
    if (p >= position) {
      throw std::invalid_argument("KvCache::SetNextPosition(" + std::to_string(position) +
                                  ") before entry at " + std::to_string(p));
    }
  }
  next_position_ = position;
}

int64_t KvCache::allocated_bytes() const {
  int64_t bytes = 0;
  for (const auto* rows : {&keys_, &values_}) {
    for (const std::vector<float>& layer : *rows)
      bytes += static_cast<int64_t>(layer.capacity() * sizeof(float));
  }
  return bytes;
}

void KvCache::Truncate(int64_t n) {
  if (n < 0 || n > size()) {
    throw std::out_of_range("KvCache::Truncate(" + std::to_string(n) + ") on a cache of " +
                            std::to_string(size()) + " entries");
  }
  positions_.resize(n);
  visibility_.resize(n);
  next_position_ =
      positions_.empty() ? 0 : *std::max_element(positions_.begin(), positions_.end()) + 1;
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
  for (int64_t index : entry_indices) {
    positions_[kept] = positions_[index];
    visibility_[kept++] = visibility_[index];
  }
  positions_.resize(kept);
  visibility_.resize(kept);
}

}  // namespace gistmem::model
