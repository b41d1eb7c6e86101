#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/tokenizer/added_tokens.h"
#include "model/tokenizer/bpe_model.h"
#include "model/tokenizer/split_regex.h"

namespace gistmem::model {

// What tokenizer.json asks for, checked against what this tokenizer supports.
struct TokenizerDefinition {
  std::vector<AddedToken> added_tokens;
  bool nfc = false;
  // Split pre-tokenizers that run before the byte-level step, in order.
  std::vector<SplitRegex> splits;
  bool add_prefix_space = false;
  // The ByteLevel pre-tokenizer's own GPT-2 split (use_regex: true).
  std::optional<SplitRegex> byte_level_split;
  TokenMap vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool ignore_merges = false;
};

// Parses tokenizer.json text; `source` (the file name) starts every error message, which
// also names the offending JSON key.
TokenizerDefinition ParseTokenizerJson(std::string_view json_text, std::string_view source);

}  // namespace gistmem::model
