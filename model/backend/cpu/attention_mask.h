// Which cached entries a query may attend to, by stream position. This is the one place the
// rule lives, so a memory policy can replace it.
//
// The cache itself is the first filter: a query sees the entries already in the cache plus
// the earlier rows of its own chunk (and itself). This predicate then applies the model's
// own rule: causality by position and, for Mistral, the sliding window (q - k < window).
#pragma once

#include <cstdint>
#include <optional>

namespace gistmem::model {

struct AttentionMask {
  std::optional<int64_t> sliding_window;

  bool Visible(int64_t query_position, int64_t key_position) const {
    if (key_position > query_position) return false;
    return !sliding_window || query_position - key_position < *sliding_window;
  }
};

}  // namespace gistmem::model
