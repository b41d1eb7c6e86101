#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer/tokenizer_error.h"

namespace gistmem::model {

// A byte-level BPE tokenizer read from a Hugging Face tokenizer.json (GPT-2, Llama-3, Qwen2,
// Qwen3 style). Encode gives the ids of Hugging Face `tokenizers`'
// encode(text, add_special_tokens=False); Decode those of decode(ids). Copies share one
// immutable state; every method is const and safe to call from many threads.
class Tokenizer {
 public:
  // Throws TokenizerError naming the file and the JSON key for unsupported or corrupt files.
  static Tokenizer FromFile(const std::filesystem::path& path);
  // Same, from tokenizer.json text; `source_name` stands for the file in error messages.
  static Tokenizer FromJson(std::string_view json_text, std::string_view source_name);

  // Throws TokenizerError when `utf8` is not valid UTF-8. Added tokens written in the text
  // (such as "<|eot_id|>") become their ids.
  std::vector<int32_t> Encode(std::string_view utf8) const;

  // Unknown ids are skipped, as Hugging Face does; bytes that do not form UTF-8 come out as
  // U+FFFD. With skip_special, special added tokens are left out.
  std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The id of a vocabulary entry or added token, by its exact text.
  std::optional<int32_t> TokenId(std::string_view token) const;
  // The text of an id as the vocabulary writes it (byte-level alphabet for BPE tokens,
  // content for added tokens); empty for unknown ids.
  std::string_view TokenText(int32_t id) const;
  // The raw bytes an id contributes to decoded text (possibly part of a UTF-8 character);
  // empty for unknown ids.
  std::string_view TokenBytes(int32_t id) const;

  // One past the largest id of the vocabulary and added tokens.
  int32_t vocab_size() const;
  bool IsSpecial(int32_t id) const;
  bool IsAddedToken(int32_t id) const;

 private:
  struct State;
  explicit Tokenizer(std::shared_ptr<const State> state);

  std::shared_ptr<const State> state_;
};

}  // namespace gistmem::model
