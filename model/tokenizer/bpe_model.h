#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/tokenizer/string_hash.h"
#include "model/tokenizer/word_cache.h"

namespace gistmem::model {

using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct BpeOptions {
  // A pre-token that is itself in the vocabulary becomes that token without merging.
  bool ignore_merges = false;
  // Token for characters missing from the vocabulary (they are dropped when unset).
  std::optional<int32_t> unk_id;
  // Consecutive unknown characters become a single unk token.
  bool fuse_unk = false;
};

// Byte-level BPE over a GPT-2 style vocabulary, merging by rank like Hugging Face's
// BPE model. Encoding is const and thread-safe.
class BpeModel {
 public:
  // `vocab` maps byte-level token strings to ids; `merges` are (left, right) in rank order.
  // Errors name `context`.
  BpeModel(TokenMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           BpeOptions options, std::string_view context);
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-token, given as raw bytes (before the byte-level mapping).
  void EncodeWord(std::string_view bytes, std::vector<int32_t>& ids) const;

  const TokenMap& vocab() const { return vocab_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };

  const Merge* FindMerge(int32_t left, int32_t right) const;
  void InitialSymbols(std::string_view bytes, std::vector<int32_t>& symbols) const;
  // Applies merges in rank order (leftmost first among equal ranks) to `symbols` in place.
  void MergeSymbols(std::vector<int32_t>& symbols) const;

  TokenMap vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  BpeOptions options_;
  // Id of the single-character token for each byte, -1 if the vocabulary lacks it.
  std::array<int32_t, 256> byte_ids_;
  WordCache cache_;
};

}  // namespace gistmem::model
