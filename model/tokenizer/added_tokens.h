#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gistmem::model {

// An entry of tokenizer.json's "added_tokens".
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A stretch of input after added tokens are pulled out: an added token's id, or text that
// still has to be tokenized (added_token_id < 0).
struct TextSegment {
  std::string_view text;
  int32_t added_token_id = -1;
};

// Finds added tokens in text as Hugging Face's AddedVocabulary does: leftmost-longest
// non-overlapping matches, then single_word / lstrip / rstrip applied to each match.
class AddedTokenMatcher {
 public:
  // Matches `pattern` (the token's content, normalized when the token is) as `token`; an
  // earlier token wins over a later one with the same pattern. `token` must outlive this.
  void Add(std::string_view pattern, const AddedToken& token);

  bool empty() const { return patterns_ == 0; }

  // Appends the segments of `text` (valid UTF-8) in order; empty text segments are left out.
  void Split(std::string_view text, std::vector<TextSegment>& segments) const;

 private:
  struct Match {
    size_t end = 0;
    const AddedToken* token = nullptr;
  };

  Match LongestMatchAt(std::string_view text, size_t start) const;
  static uint64_t EdgeKey(int32_t node, uint8_t byte) { return (uint64_t(node) << 8) | byte; }

  // A byte trie: node 0 is the root; edges_[node, byte] is the child.
  std::unordered_map<uint64_t, int32_t> edges_;
  std::vector<const AddedToken*> node_token_{nullptr};
  std::array<bool, 256> starts_pattern_{};
  size_t patterns_ = 0;
};

}  // namespace gistmem::model
