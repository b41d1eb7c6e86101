#include "model/tokenizer/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "model/tokenizer/added_tokens.h"
#include "model/tokenizer/bpe_model.h"
#include "model/tokenizer/byte_level.h"
#include "model/tokenizer/split_regex.h"
#include "model/tokenizer/tokenizer_definition.h"
#include "model/tokenizer/unicode_text.h"
#include "model/tokenizer/utf8.h"

namespace gistmem::model {
namespace {

struct TokenEntry {
  std::string text;
  // What the ByteLevel decoder makes of `text`: the bytes it spells, or `text` itself when it
  // has characters outside the byte-level alphabet.
  std::string bytes;
  bool known = false;
  bool added = false;
  bool special = false;
};

BpeOptions OptionsOf(const TokenizerDefinition& definition) {
  BpeOptions options;
  options.ignore_merges = definition.ignore_merges;
  options.fuse_unk = definition.fuse_unk;
  if (definition.unk_token) options.unk_id = definition.vocab.find(*definition.unk_token)->second;
  return options;
}

}  // namespace

struct Tokenizer::State {
  State(TokenizerDefinition definition, std::string_view source);

  // Text between added tokens: normalize, pull out normalized added tokens, pre-tokenize.
  void EncodeSegment(std::string_view text, std::vector<int32_t>& ids) const;
  // Normalized text free of added tokens: the Split steps, then ByteLevel and BPE.
  void EncodePlain(std::string_view text, std::vector<int32_t>& ids) const;
  void EncodeByteLevel(std::string_view piece, std::vector<int32_t>& ids) const;

  const TokenEntry* Entry(int32_t id) const {
    if (id < 0 || size_t(id) >= entries.size() || !entries[id].known) return nullptr;
    return &entries[id];
  }

  std::vector<AddedToken> added_tokens;
  AddedTokenMatcher raw_added_tokens;         // matched before normalization
  AddedTokenMatcher normalized_added_tokens;  // matched in normalized text
  TokenMap added_ids;
  bool nfc;
  std::vector<SplitRegex> splits;
  bool add_prefix_space;
  std::optional<SplitRegex> byte_level_split;
  BpeModel model;
  std::vector<TokenEntry> entries;
};

Tokenizer::State::State(TokenizerDefinition definition, std::string_view source)
    : added_tokens(std::move(definition.added_tokens)),
      nfc(definition.nfc),
      splits(std::move(definition.splits)),
      add_prefix_space(definition.add_prefix_space),
      byte_level_split(std::move(definition.byte_level_split)),
      model(std::move(definition.vocab), definition.merges, OptionsOf(definition), source) {
  size_t size = 0;
  for (const auto& [text, id] : model.vocab())
    size = std::max(size, size_t(id) + 1);
  for (const AddedToken& token : added_tokens)
    size = std::max(size, size_t(token.id) + 1);
  entries.resize(size);

  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
  auto fill = [&](TokenEntry& entry, const std::string& text) {
    entry.text = text;
    entry.bytes.clear();
    if (!alphabet.Decode(text, entry.bytes)) entry.bytes = text;
    entry.known = true;
  };
  for (const auto& [text, id] : model.vocab())
    fill(entries[id], text);

  // Special tokens are matched before the other added tokens, as Hugging Face orders them.
  std::unordered_set<std::string> special_contents;
  for (bool special : {true, false}) {
    for (const AddedToken& token : added_tokens) {
      if (token.special != special || token.content.empty()) continue;
      if (special) special_contents.insert(token.content);
      added_ids.try_emplace(token.content, token.id);
      fill(entries[token.id], token.content);
      entries[token.id].added = true;
      if (!token.normalized) {
        raw_added_tokens.Add(token.content, token);
      } else if (nfc) {
        std::string storage;
        normalized_added_tokens.Add(unicode::NormalizeNfc(token.content, storage), token);
      } else {
        normalized_added_tokens.Add(token.content, token);
      }
    }
  }
  for (TokenEntry& entry : entries)
    entry.special = entry.known && special_contents.contains(entry.text);
}

void Tokenizer::State::EncodeSegment(std::string_view text, std::vector<int32_t>& ids) const {
  std::string storage;
  const std::string_view normalized = nfc ? unicode::NormalizeNfc(text, storage) : text;
  if (normalized_added_tokens.empty()) {
    EncodePlain(normalized, ids);
    return;
  }
  std::vector<TextSegment> segments;
  normalized_added_tokens.Split(normalized, segments);
  for (const TextSegment& segment : segments) {
    if (segment.added_token_id >= 0) {
      ids.push_back(segment.added_token_id);
    } else {
      EncodePlain(segment.text, ids);
    }
  }
}

void Tokenizer::State::EncodePlain(std::string_view text, std::vector<int32_t>& ids) const {
  std::vector<std::string_view> pieces{text};
  std::vector<std::string_view> next_pieces;
  for (const SplitRegex& split : splits) {
    next_pieces.clear();
    for (std::string_view piece : pieces)
      split.SplitIsolated(piece, next_pieces);
    pieces.swap(next_pieces);
  }
  for (std::string_view piece : pieces)
    EncodeByteLevel(piece, ids);
}

void Tokenizer::State::EncodeByteLevel(std::string_view piece, std::vector<int32_t>& ids) const {
  std::string prefixed;
  if (add_prefix_space && !piece.starts_with(' ')) {
    prefixed = " ";
    prefixed.append(piece);
    piece = prefixed;
  }
  if (!byte_level_split) {
    model.EncodeWord(piece, ids);
    return;
  }
  std::vector<std::string_view> words;
  byte_level_split->SplitIsolated(piece, words);
  for (std::string_view word : words)
    model.EncodeWord(word, ids);
}

Tokenizer::Tokenizer(std::shared_ptr<const State> state) : state_(std::move(state)) {}

Tokenizer Tokenizer::FromFile(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw TokenizerError(path.string() + ": cannot open tokenizer file");
  std::ostringstream text;
  text << file.rdbuf();
  if (!file.good() && !file.eof()) throw TokenizerError(path.string() + ": cannot read file");
  return FromJson(text.str(), path.string());
}

Tokenizer Tokenizer::FromJson(std::string_view json_text, std::string_view source_name) {
  return Tokenizer(
      std::make_shared<const State>(ParseTokenizerJson(json_text, source_name), source_name));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view utf8) const {
  if (const auto invalid = utf8::FindInvalid(utf8)) {
    throw TokenizerError("cannot encode text that is not valid UTF-8 (bad byte at offset " +
                         std::to_string(*invalid) + ")");
  }
  std::vector<int32_t> ids;
  ids.reserve(utf8.size() / 3 + 1);
  std::vector<TextSegment> segments;
  state_->raw_added_tokens.Split(utf8, segments);
  for (const TextSegment& segment : segments) {
    if (segment.added_token_id >= 0) {
      ids.push_back(segment.added_token_id);
    } else {
      state_->EncodeSegment(segment.text, ids);
    }
  }
  return ids;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    const TokenEntry* entry = state_->Entry(id);
    if (entry == nullptr || (skip_special && entry->special)) continue;
    bytes.append(entry->bytes);
  }
  if (!utf8::FindInvalid(bytes)) return bytes;
  std::string text;
  utf8::AppendLossy(bytes, text);
  return text;
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token) const {
  if (const auto added = state_->added_ids.find(token); added != state_->added_ids.end()) {
    return added->second;
  }
  const TokenMap& vocab = state_->model.vocab();
  if (const auto found = vocab.find(token); found != vocab.end()) return found->second;
  return std::nullopt;
}

std::string_view Tokenizer::TokenText(int32_t id) const {
  const TokenEntry* entry = state_->Entry(id);
  return entry == nullptr ? std::string_view() : std::string_view(entry->text);
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  const TokenEntry* entry = state_->Entry(id);
  return entry == nullptr ? std::string_view() : std::string_view(entry->bytes);
}

int32_t Tokenizer::vocab_size() const {
  return int32_t(state_->entries.size());
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const TokenEntry* entry = state_->Entry(id);
  return entry != nullptr && entry->special;
}

bool Tokenizer::IsAddedToken(int32_t id) const {
  const TokenEntry* entry = state_->Entry(id);
  return entry != nullptr && entry->added;
}

}  // namespace gistmem::model
