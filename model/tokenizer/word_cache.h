#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/tokenizer/string_hash.h"

namespace gistmem::model {

// Thread-safe memo of BPE results per pre-token. Sharded so that concurrent encoders rarely
// wait on the same lock; a full shard is simply emptied (BPE is deterministic, so a miss only
// costs time).
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 256;

  // Appends the cached ids of `word` to `ids`; false when `word` is not cached.
  bool AppendCached(std::string_view word, std::vector<int32_t>& ids) const;
  void Insert(std::string_view word, const std::vector<int32_t>& ids) const;

 private:
  static constexpr size_t kShards = 64;
  static constexpr size_t kEntriesPerShard = 256;

  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> entries;
  };

  Shard& ShardFor(std::string_view word) const { return shards_[StringHash()(word) % kShards]; }

  mutable std::array<Shard, kShards> shards_;
};

}  // namespace gistmem::model
