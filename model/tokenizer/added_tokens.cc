#include "model/tokenizer/added_tokens.h"

#include <algorithm>

#include "model/tokenizer/unicode_text.h"

namespace gistmem::model {

void AddedTokenMatcher::Add(std::string_view pattern, const AddedToken& token) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (char c : pattern) {
    const auto [edge, inserted] =
        edges_.try_emplace(EdgeKey(node, static_cast<uint8_t>(c)), int32_t(node_token_.size()));
    if (inserted) node_token_.push_back(nullptr);
    node = edge->second;
  }
  if (node_token_[node] == nullptr) node_token_[node] = &token;
  starts_pattern_[static_cast<uint8_t>(pattern[0])] = true;
  ++patterns_;
}

AddedTokenMatcher::Match AddedTokenMatcher::LongestMatchAt(std::string_view text,
                                                           size_t start) const {
  Match longest;
  int32_t node = 0;
  for (size_t i = start; i < text.size(); ++i) {
    const auto edge = edges_.find(EdgeKey(node, static_cast<uint8_t>(text[i])));
    if (edge == edges_.end()) break;
    node = edge->second;
    if (node_token_[node] != nullptr) longest = {i + 1, node_token_[node]};
  }
  return longest;
}

void AddedTokenMatcher::Split(std::string_view text, std::vector<TextSegment>& segments) const {
  auto add_text = [&](size_t begin, size_t end) {
    if (end > begin) segments.push_back({text.substr(begin, end - begin), -1});
  };
  size_t segment_start = 0;
  size_t position = 0;
  while (position < text.size()) {
    if (!starts_pattern_[static_cast<uint8_t>(text[position])]) {
      ++position;
      continue;
    }
    const Match match = LongestMatchAt(text, position);
    if (match.token == nullptr) {
      ++position;
      continue;
    }
    size_t start = position;
    size_t stop = match.end;
    // Like Aho-Corasick's find_iter, the next search starts after this match even when the
    // match is then discarded or widened.
    position = match.end;
    const AddedToken& token = *match.token;
    if (token.single_word) {
      const bool word_before =
          start > 0 && unicode::IsWordCharacter(unicode::LastCodePoint(text.substr(0, start)));
      const bool word_after = stop < text.size() &&
                              unicode::IsWordCharacter(unicode::FirstCodePoint(text.substr(stop)));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      start =
          std::max(start - unicode::TrailingWhiteSpaceLength(text.substr(0, start)), segment_start);
    }
    if (token.rstrip) stop += unicode::LeadingWhiteSpaceLength(text.substr(stop));
    add_text(segment_start, start);
    segments.push_back({text.substr(start, stop - start), token.id});
    segment_start = stop;
  }
  add_text(segment_start, text.size());
}

}  // namespace gistmem::model
