#include "model/tokenizer/tokenizer_definition.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "model/tokenizer/tokenizer_error.h"

namespace gistmem::model {
namespace {

using nlohmann::json;

// Ids index dense tables, so a corrupt file must not ask for billions of them.
constexpr int64_t kMaxTokenId = (int64_t(1) << 24) - 1;

// The GPT-2 pre-tokenizer regex that ByteLevel applies when use_regex is true.
constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Builds error messages of the form "<file>: <key>: <problem>".
class Reader {
 public:
  explicit Reader(std::string_view source) : source_(source) {}

  [[noreturn]] void Fail(const std::string& key, const std::string& problem) const {
    throw TokenizerError(source_ + ": " + key + ": " + problem);
  }

  std::string Context(const std::string& key) const { return source_ + ": " + key; }

  const json& Object(const json& parent, const std::string& name, const std::string& key) const {
    const auto found = parent.find(name);
    if (found == parent.end()) Fail(key, "missing");
    if (!found->is_object()) Fail(key, "expected an object");
    return *found;
  }

  std::string String(const json& parent, const std::string& name, const std::string& key) const {
    const auto found = parent.find(name);
    if (found == parent.end()) Fail(key, "missing");
    if (!found->is_string()) Fail(key, "expected a string");
    return found->get<std::string>();
  }

  bool Bool(const json& parent, const std::string& name, const std::string& key,
            bool absent_value) const {
    const auto found = parent.find(name);
    if (found == parent.end() || found->is_null()) return absent_value;
    if (!found->is_boolean()) Fail(key, "expected true or false");
    return found->get<bool>();
  }

  // Fails unless `name` is absent, null or `allowed`.
  void RequireAbsentOr(const json& parent, const std::string& name, const std::string& key,
                       const json& allowed, const std::string& problem) const {
    const auto found = parent.find(name);
    if (found != parent.end() && !found->is_null() && *found != allowed) Fail(key, problem);
  }

 private:
  std::string source_;
};

std::string Quoted(const std::string& text) {
  return "\"" + text + "\"";
}

void ReadAddedTokens(const Reader& reader, const json& root, TokenizerDefinition& definition) {
  const auto found = root.find("added_tokens");
  if (found == root.end() || found->is_null()) return;
  if (!found->is_array()) reader.Fail("added_tokens", "expected an array");
  for (size_t i = 0; i < found->size(); ++i) {
    const json& entry = (*found)[i];
    const std::string key = "added_tokens[" + std::to_string(i) + "]";
    if (!entry.is_object()) reader.Fail(key, "expected an object");
    const auto id = entry.find("id");
    // The id must be there, but Hugging Face numbers added tokens itself (see below).
    if (id == entry.end() || !id->is_number_integer() || id->get<int64_t>() < 0) {
      reader.Fail(key + ".id", "expected a non-negative integer");
    }
    AddedToken token;
    token.content = reader.String(entry, "content", key + ".content");
    token.single_word = reader.Bool(entry, "single_word", key + ".single_word", false);
    token.lstrip = reader.Bool(entry, "lstrip", key + ".lstrip", false);
    token.rstrip = reader.Bool(entry, "rstrip", key + ".rstrip", false);
    token.special = reader.Bool(entry, "special", key + ".special", false);
    token.normalized = reader.Bool(entry, "normalized", key + ".normalized", !token.special);
    definition.added_tokens.push_back(std::move(token));
  }
}

// Hugging Face only warns when the ids written in added_tokens disagree with the ones it
// gives: a token whose content is already known keeps that id, others are numbered after the
// model's vocabulary. Numbering the same way keeps such files encoding as they do there.
void AssignAddedTokenIds(TokenizerDefinition& definition) {
  const auto model_size = int32_t(definition.vocab.size());
  std::vector<AddedToken> assigned;
  std::unordered_map<std::string, size_t> index_by_content;
  std::optional<int32_t> largest_id;
  for (AddedToken& token : definition.added_tokens) {
    if (token.content.empty()) continue;
    if (const auto seen = index_by_content.find(token.content); seen != index_by_content.end()) {
      // A repeated token keeps its id and takes the later flags.
      AddedToken& earlier = assigned[seen->second];
      token.id = earlier.id;
      token.special = token.special || earlier.special;
      earlier = token;
      continue;
    }
    if (const auto found = definition.vocab.find(token.content); found != definition.vocab.end()) {
      token.id = found->second;
    } else if (!largest_id) {
      token.id = model_size;
    } else {
      token.id = *largest_id >= model_size || model_size == 0 ? *largest_id + 1 : model_size;
    }
    largest_id = std::max(largest_id.value_or(token.id), token.id);
    index_by_content.emplace(token.content, assigned.size());
    assigned.push_back(token);
  }
  definition.added_tokens = std::move(assigned);
}

void ReadNormalizer(const Reader& reader, const json& normalizer, const std::string& key,
                    TokenizerDefinition& definition) {
  if (normalizer.is_null()) return;
  if (!normalizer.is_object()) reader.Fail(key, "expected an object or null");
  const std::string type = reader.String(normalizer, "type", key + ".type");
  if (type == "NFC") {
    definition.nfc = true;
  } else if (type == "Sequence") {
    const auto steps = normalizer.find("normalizers");
    if (steps == normalizer.end() || !steps->is_array()) {
      reader.Fail(key + ".normalizers", "expected an array");
    }
    for (size_t i = 0; i < steps->size(); ++i) {
      ReadNormalizer(reader, (*steps)[i], key + ".normalizers[" + std::to_string(i) + "]",
                     definition);
    }
  } else {
    reader.Fail(key + ".type", "normalizer " + Quoted(type) +
                                   " is not supported (only NFC, or a Sequence of NFC)");
  }
}

void ReadSplit(const Reader& reader, const json& split, const std::string& key,
               TokenizerDefinition& definition) {
  const std::string behavior = reader.String(split, "behavior", key + ".behavior");
  if (behavior != "Isolated") {
    reader.Fail(key + ".behavior",
                "Split behavior " + Quoted(behavior) + " is not supported (only Isolated)");
  }
  if (reader.Bool(split, "invert", key + ".invert", false)) {
    reader.Fail(key + ".invert", "inverted Split is not supported");
  }
  const json& pattern = reader.Object(split, "pattern", key + ".pattern");
  if (pattern.contains("Regex")) {
    const std::string regex = reader.String(pattern, "Regex", key + ".pattern.Regex");
    definition.splits.push_back(
        SplitRegex::FromPattern(regex, reader.Context(key + ".pattern.Regex")));
  } else if (pattern.contains("String")) {
    const std::string literal = reader.String(pattern, "String", key + ".pattern.String");
    definition.splits.push_back(
        SplitRegex::FromLiteral(literal, reader.Context(key + ".pattern.String")));
  } else {
    reader.Fail(key + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
  }
}

void ReadPreTokenizer(const Reader& reader, const json& step, const std::string& key,
                      TokenizerDefinition& definition, bool& saw_byte_level) {
  if (!step.is_object()) reader.Fail(key, "expected an object");
  const std::string type = reader.String(step, "type", key + ".type");
  if (saw_byte_level) {
    reader.Fail(key, "pre-tokenizer " + Quoted(type) +
                         " after ByteLevel is not supported (ByteLevel must come last)");
  }
  if (type == "Sequence") {
    const auto steps = step.find("pretokenizers");
    if (steps == step.end() || !steps->is_array()) {
      reader.Fail(key + ".pretokenizers", "expected an array");
    }
    for (size_t i = 0; i < steps->size(); ++i) {
      ReadPreTokenizer(reader, (*steps)[i], key + ".pretokenizers[" + std::to_string(i) + "]",
                       definition, saw_byte_level);
    }
  } else if (type == "Split") {
    ReadSplit(reader, step, key, definition);
  } else if (type == "ByteLevel") {
    saw_byte_level = true;
    // Hugging Face's defaults for a ByteLevel written without these fields.
    definition.add_prefix_space =
        reader.Bool(step, "add_prefix_space", key + ".add_prefix_space", true);
    if (reader.Bool(step, "use_regex", key + ".use_regex", true)) {
      definition.byte_level_split =
          SplitRegex::FromPattern(kGpt2SplitPattern, reader.Context(key + ".use_regex"));
    }
  } else {
    reader.Fail(key + ".type", "pre-tokenizer " + Quoted(type) +
                                   " is not supported (only Split, ByteLevel and Sequence)");
  }
}

void ReadDecoder(const Reader& reader, const json& root) {
  const auto decoder = root.find("decoder");
  if (decoder == root.end() || decoder->is_null()) {
    reader.Fail("decoder", "missing (a ByteLevel decoder is required)");
  }
  if (!decoder->is_object()) reader.Fail("decoder", "expected an object");
  const std::string type = reader.String(*decoder, "type", "decoder.type");
  if (type != "ByteLevel") {
    reader.Fail("decoder.type", "decoder " + Quoted(type) + " is not supported (only ByteLevel)");
  }
}

void ReadVocab(const Reader& reader, const json& model, TokenizerDefinition& definition) {
  const json& vocab = reader.Object(model, "vocab", "model.vocab");
  definition.vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > kMaxTokenId) {
      reader.Fail("model.vocab[" + Quoted(token) + "]",
                  "expected an id from 0 to " + std::to_string(kMaxTokenId));
    }
    definition.vocab.emplace(token, id.get<int32_t>());
  }
}

void ReadMerges(const Reader& reader, const json& model, TokenizerDefinition& definition) {
  const auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array())
    reader.Fail("model.merges", "expected an array");
  definition.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const json& merge = (*merges)[i];
    const std::string key = "model.merges[" + std::to_string(i) + "]";
    if (merge.is_string()) {
      // Legacy form "left right": byte-level tokens never contain a plain space.
      const std::string text = merge.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos) reader.Fail(key, "expected \"left right\"");
      definition.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      definition.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      reader.Fail(key, "expected \"left right\" or [\"left\", \"right\"]");
    }
  }
}

void ReadModel(const Reader& reader, const json& root, TokenizerDefinition& definition) {
  const json& model = reader.Object(root, "model", "model");
  const auto type = model.find("type");
  if (type != model.end() && (!type->is_string() || type->get<std::string>() != "BPE")) {
    reader.Fail("model.type",
                "model " + (type->is_string() ? Quoted(type->get<std::string>()) : type->dump()) +
                    " is not supported (only BPE)");
  }
  reader.RequireAbsentOr(model, "dropout", "model.dropout", 0.0,
                         "BPE dropout is not supported (encoding must be deterministic)");
  if (reader.Bool(model, "byte_fallback", "model.byte_fallback", false)) {
    reader.Fail("model.byte_fallback", "byte_fallback is not supported");
  }
  reader.RequireAbsentOr(model, "continuing_subword_prefix", "model.continuing_subword_prefix", "",
                         "a continuing_subword_prefix is not supported");
  reader.RequireAbsentOr(model, "end_of_word_suffix", "model.end_of_word_suffix", "",
                         "an end_of_word_suffix is not supported");
  definition.fuse_unk = reader.Bool(model, "fuse_unk", "model.fuse_unk", false);
  definition.ignore_merges = reader.Bool(model, "ignore_merges", "model.ignore_merges", false);
  if (const auto unk = model.find("unk_token"); unk != model.end() && !unk->is_null()) {
    definition.unk_token = reader.String(model, "unk_token", "model.unk_token");
  }
  ReadVocab(reader, model, definition);
  ReadMerges(reader, model, definition);
  if (definition.unk_token && !definition.vocab.contains(*definition.unk_token)) {
    reader.Fail("model.unk_token", Quoted(*definition.unk_token) + " is not in model.vocab");
  }
}

}  // namespace

TokenizerDefinition ParseTokenizerJson(std::string_view json_text, std::string_view source) {
  const Reader reader(source);
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& error) {
    throw TokenizerError(std::string(source) + ": not valid JSON: " + error.what());
  }
  if (!root.is_object()) reader.Fail("(top level)", "expected a JSON object");

  TokenizerDefinition definition;
  // Encoding a single text with truncation or padding set would change its ids.
  reader.RequireAbsentOr(root, "truncation", "truncation", nullptr, "truncation is not supported");
  reader.RequireAbsentOr(root, "padding", "padding", nullptr, "padding is not supported");
  ReadAddedTokens(reader, root, definition);
  if (const auto normalizer = root.find("normalizer"); normalizer != root.end()) {
    ReadNormalizer(reader, *normalizer, "normalizer", definition);
  }
  bool saw_byte_level = false;
  if (const auto pre = root.find("pre_tokenizer"); pre != root.end() && !pre->is_null()) {
    ReadPreTokenizer(reader, *pre, "pre_tokenizer", definition, saw_byte_level);
  }
  if (!saw_byte_level) {
    reader.Fail("pre_tokenizer", "a ByteLevel pre-tokenizer is required (byte-level BPE only)");
  }
  ReadDecoder(reader, root);
  // post_processor only adds special tokens when they are asked for, and Encode never asks.
  ReadModel(reader, root, definition);
  AssignAddedTokenIds(definition);
  return definition;
}

}  // namespace gistmem::model
