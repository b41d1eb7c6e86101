#include "model/tokenizer/word_cache.h"

namespace gistmem::model {

bool WordCache::AppendCached(std::string_view word, std::vector<int32_t>& ids) const {
  Shard& shard = ShardFor(word);
  std::lock_guard lock(shard.mutex);
  const auto found = shard.entries.find(word);
  if (found == shard.entries.end()) return false;
  ids.insert(ids.end(), found->second.begin(), found->second.end());
  return true;
}

void WordCache::Insert(std::string_view word, const std::vector<int32_t>& ids) const {
  if (word.size() > kMaxWordBytes) return;
  Shard& shard = ShardFor(word);
  std::lock_guard lock(shard.mutex);
  if (shard.entries.size() >= kEntriesPerShard) shard.entries.clear();
  shard.entries.try_emplace(std::string(word), ids);
}

}  // namespace gistmem::model
