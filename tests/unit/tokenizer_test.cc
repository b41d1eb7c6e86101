// Unit tests of the byte-level BPE tokenizer on tiny hand-written tokenizer.json files.
#include "model/tokenizer/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "model/tokenizer/byte_level.h"
#include "model/tokenizer/incremental_decoder.h"
#include "model/tokenizer/split_regex.h"

namespace gistmem::model {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A Llama-3 shaped tokenizer.json: the 256 byte characters as ids 0..255, then `tokens`.
json TinyTokenizer(const std::vector<std::string>& tokens, const std::vector<std::string>& merges) {
  json vocab = json::object();
  for (int byte = 0; byte < 256; ++byte) {
    vocab[std::string(ByteLevelAlphabet::Get().CharFor(uint8_t(byte)))] = byte;
  }
  int next_id = 256;
  for (const std::string& token : tokens)
    vocab[token] = next_id++;
  json split = {{"type", "Split"},
                {"pattern", {{"Regex", kLlama3Split}}},
                {"behavior", "Isolated"},
                {"invert", false}};
  json byte_level = {{"type", "ByteLevel"},
                     {"add_prefix_space", false},
                     {"trim_offsets", true},
                     {"use_regex", false}};
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"}, {"pretokenizers", json::array({split, byte_level})}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", json(merges)}}},
  };
}

json AddedTokenJson(int id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},     {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", !special}, {"special", special}};
}

Tokenizer Load(const json& definition) {
  return Tokenizer::FromJson(definition.dump(), "tiny.json");
}

// The ids of byte-level token texts, for readable expectations.
std::vector<int32_t> Ids(const Tokenizer& tokenizer, const std::vector<std::string>& tokens) {
  std::vector<int32_t> ids;
  for (const std::string& token : tokens)
    ids.push_back(tokenizer.TokenId(token).value());
  return ids;
}

std::string LoadError(const json& definition) {
  try {
    Load(definition);
  } catch (const TokenizerError& error) {
    return error.what();
  }
  return "(loaded without error)";
}

TEST(TokenizerTest, MergesApplyInRankOrder) {
  const Tokenizer right_first = Load(TinyTokenizer({"ab", "bc"}, {"b c", "a b"}));
  EXPECT_EQ(right_first.Encode("abc"), Ids(right_first, {"a", "bc"}));
  const Tokenizer left_first = Load(TinyTokenizer({"ab", "bc"}, {"a b", "b c"}));
  EXPECT_EQ(left_first.Encode("abc"), Ids(left_first, {"ab", "c"}));
}

TEST(TokenizerTest, MergedTokensMergeFurther) {
  const Tokenizer tokenizer = Load(TinyTokenizer({"bc", "abc", "abcd"}, {"b c", "a bc", "abc d"}));
  EXPECT_EQ(tokenizer.Encode("abcd"), Ids(tokenizer, {"abcd"}));
  EXPECT_EQ(tokenizer.Encode("abcabc"), Ids(tokenizer, {"abc", "abc"}));
}

TEST(TokenizerTest, EqualRanksMergeLeftmostFirst) {
  const Tokenizer tokenizer = Load(TinyTokenizer({"aa", "aaaa"}, {"a a", "aa aa"}));
  EXPECT_EQ(tokenizer.Encode("aaa"), Ids(tokenizer, {"aa", "a"}));
  EXPECT_EQ(tokenizer.Encode("aaaaa"), Ids(tokenizer, {"aaaa", "a"}));
  EXPECT_EQ(tokenizer.Encode("aaaaaaaa"), Ids(tokenizer, {"aaaa", "aaaa"}));
}

TEST(TokenizerTest, MergesAsListsEqualMergesAsStrings) {
  const Tokenizer as_strings = Load(TinyTokenizer({"ab", "abc"}, {"a b", "ab c"}));
  json lists = TinyTokenizer({"ab", "abc"}, {});
  lists["model"]["merges"] = json::array({json::array({"a", "b"}), json::array({"ab", "c"})});
  const Tokenizer as_lists = Load(lists);
  for (const char* text : {"abc", "cab", "abcabc ab"}) {
    EXPECT_EQ(as_strings.Encode(text), as_lists.Encode(text)) << text;
  }
  EXPECT_EQ(as_lists.Encode("abc"), Ids(as_lists, {"abc"}));
}

TEST(TokenizerTest, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  json definition = TinyTokenizer({"xyz"}, {});
  EXPECT_EQ(Load(definition).Encode("xyz"), Ids(Load(definition), {"x", "y", "z"}));
  definition["model"]["ignore_merges"] = true;
  const Tokenizer tokenizer = Load(definition);
  EXPECT_EQ(tokenizer.Encode("xyz"), Ids(tokenizer, {"xyz"}));
}

TEST(TokenizerTest, MergesNeverCrossPreTokens) {
  // "b Ġ" would join a word's end to the next word's leading space.
  const Tokenizer tokenizer =
      Load(TinyTokenizer({"ab", "b\u0120", "\u0120a"}, {"b \u0120", "a b", "\u0120 a"}));
  EXPECT_EQ(tokenizer.Encode("ab ab"), Ids(tokenizer, {"ab", "\u0120", "ab"}));
}

TEST(TokenizerTest, SplitRegexGroupsDigitsAndWhitespace) {
  const Tokenizer tokenizer =
      Load(TinyTokenizer({"12", "123", "\u0120\u0120"}, {"1 2", "12 3", "\u0120 \u0120"}));
  // \p{N}{1,3} pieces: "123" "123" "1"; "   x": "  " then " x".
  EXPECT_EQ(tokenizer.Encode("1231231"), Ids(tokenizer, {"123", "123", "1"}));
  EXPECT_EQ(tokenizer.Encode("   x"), Ids(tokenizer, {"\u0120\u0120", "\u0120", "x"}));
}

TEST(TokenizerTest, ByteLevelMapsEveryByte) {
  const Tokenizer tokenizer = Load(TinyTokenizer({}, {}));
  std::string all_bytes_text = "\t\n\r \x7f";
  all_bytes_text += "\xc2\xa0\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  const std::vector<int32_t> ids = tokenizer.Encode(all_bytes_text);
  ASSERT_EQ(ids.size(), all_bytes_text.size());
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_EQ(ids[i], uint8_t(all_bytes_text[i]));
  EXPECT_EQ(tokenizer.Decode(ids), all_bytes_text);
  EXPECT_EQ(tokenizer.TokenText(' '), "\u0120");
  EXPECT_EQ(tokenizer.TokenBytes(' '), " ");
}

TEST(TokenizerTest, AddedTokensAreSplitOutBeforeEverythingElse) {
  json definition = TinyTokenizer({"ab"}, {"a b"});
  definition["added_tokens"] =
      json::array({AddedTokenJson(257, "<|eot|>", true), AddedTokenJson(258, "<|eot|>x", true),
                   AddedTokenJson(259, "<tool>", false)});
  const Tokenizer tokenizer = Load(definition);
  // The longest added token wins at a position; added tokens split words.
  EXPECT_THAT(tokenizer.Encode("a<|eot|>b<|eot|>xab<tool>"),
              ElementsAre('a', 257, 'b', 258, tokenizer.TokenId("ab").value(), 259));
  EXPECT_EQ(tokenizer.TokenId("<|eot|>"), 257);
  EXPECT_TRUE(tokenizer.IsSpecial(257));
  EXPECT_TRUE(tokenizer.IsAddedToken(259));
  EXPECT_FALSE(tokenizer.IsSpecial(259));
  EXPECT_FALSE(tokenizer.IsSpecial('a'));
  EXPECT_EQ(tokenizer.vocab_size(), 260);

  const std::vector<int32_t> ids = {'a', 257, 259, 'b'};
  EXPECT_EQ(tokenizer.Decode(ids), "a<|eot|><tool>b");
  EXPECT_EQ(tokenizer.Decode(ids, /*skip_special=*/true), "a<tool>b");
}

TEST(TokenizerTest, AddedTokenStripAndSingleWordOptions) {
  json definition = TinyTokenizer({}, {});
  json mask = AddedTokenJson(256, "<mask>", true);
  mask["lstrip"] = true;
  json end = AddedTokenJson(257, "<end>", true);
  end["rstrip"] = true;
  json word = AddedTokenJson(258, "ok", false);
  word["single_word"] = true;
  definition["added_tokens"] = json::array({mask, end, word});
  const Tokenizer tokenizer = Load(definition);
  EXPECT_THAT(tokenizer.Encode("x \t<mask> y"),
              ElementsAre('x', 256, tokenizer.TokenId("\u0120").value(), 'y'));
  EXPECT_THAT(tokenizer.Encode("<end> \n z"), ElementsAre(257, 'z'));
  EXPECT_THAT(tokenizer.Encode("ok"), ElementsAre(258));
  EXPECT_THAT(tokenizer.Encode("ok, go"),
              ElementsAre(258, ',', tokenizer.TokenId("\u0120").value(), 'g', 'o'));
  // Inside a word, a single_word token is ordinary text.
  EXPECT_THAT(tokenizer.Encode("okay"), ElementsAre('o', 'k', 'a', 'y'));
  EXPECT_THAT(tokenizer.Encode("book"), ElementsAre('b', 'o', 'o', 'k'));
}

TEST(TokenizerTest, AddedTokenIdsAreNumberedLikeHuggingFace) {
  // Hugging Face ignores the ids written in added_tokens: known contents keep their
  // vocabulary id, new ones are numbered after the model's vocabulary.
  json definition = TinyTokenizer({"ab"}, {"a b"});
  definition["added_tokens"] =
      json::array({AddedTokenJson(900, "<x>", true), AddedTokenJson(5, "ab", false),
                   AddedTokenJson(901, "<y>", true), AddedTokenJson(902, "<x>", true)});
  const Tokenizer tokenizer = Load(definition);
  EXPECT_EQ(tokenizer.TokenId("<x>"), 257);
  EXPECT_EQ(tokenizer.TokenId("<y>"), 258);
  EXPECT_EQ(tokenizer.TokenId("ab"), 256);
  EXPECT_TRUE(tokenizer.IsAddedToken(256));
  EXPECT_EQ(tokenizer.vocab_size(), 259);
  // "ab" is now an added token, so it is split out even inside a word.
  EXPECT_THAT(tokenizer.Encode("cab<y>"), ElementsAre('c', 256, 258));
}

TEST(TokenizerTest, NfcNormalizerAppliesToTextButNotToRawAddedTokens) {
  json definition = TinyTokenizer({"\u00c3\u00a9"}, {"\u00c3 \u00a9"});  // "é" as bytes C3 A9
  definition["normalizer"] = {{"type", "Sequence"},
                              {"normalizers", json::array({json{{"type", "NFC"}}})}};
  // A non-normalized token written decomposed only matches decomposed input as-is.
  definition["added_tokens"] = json::array({AddedTokenJson(257, "<e\u0301>", true)});
  const Tokenizer tokenizer = Load(definition);
  const int32_t e_acute = tokenizer.TokenId("\u00c3\u00a9").value();
  EXPECT_THAT(tokenizer.Encode("e\u0301"), ElementsAre(e_acute));
  EXPECT_THAT(tokenizer.Encode("\u00e9"), ElementsAre(e_acute));
  EXPECT_THAT(tokenizer.Encode("<e\u0301>"), ElementsAre(257));
}

TEST(TokenizerTest, NormalizedAddedTokensMatchNormalizedText) {
  json definition = TinyTokenizer({}, {});
  definition["normalizer"] = {{"type", "NFC"}};
  definition["added_tokens"] = json::array({AddedTokenJson(256, "caf\u00e9", false)});
  const Tokenizer tokenizer = Load(definition);
  EXPECT_THAT(tokenizer.Encode("a cafe\u0301"),
              ElementsAre('a', tokenizer.TokenId("\u0120").value(), 256));
}

TEST(TokenizerTest, ByteLevelPrefixSpaceAndGpt2Regex) {
  json definition =
      TinyTokenizer({"\u0120h", "\u0120he", "\u0120hel", "\u0120hell", "\u0120hello", "'s"},
                    {"\u0120 h", "\u0120h e", "\u0120he l", "\u0120hel l", "\u0120hell o", "' s"});
  definition["pre_tokenizer"] = {{"type", "ByteLevel"},
                                 {"add_prefix_space", true},
                                 {"trim_offsets", true},
                                 {"use_regex", true}};
  const Tokenizer tokenizer = Load(definition);
  EXPECT_EQ(tokenizer.Encode("hello's"), Ids(tokenizer, {"\u0120hello", "'s"}));
  EXPECT_EQ(tokenizer.Decode(tokenizer.Encode("hello's")), " hello's");
}

TEST(TokenizerTest, SplitWithAStringPatternMatchesItLiterally) {
  json definition = TinyTokenizer({"a.", "\u0120b"}, {"a .", "\u0120 b"});
  definition["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", "."}};
  const Tokenizer tokenizer = Load(definition);
  // Pieces "a", ".", " b": the "a ." merge cannot apply across them.
  EXPECT_EQ(tokenizer.Encode("a. b"), Ids(tokenizer, {"a", ".", "\u0120b"}));
}

TEST(TokenizerTest, UnknownCharactersUseTheUnkToken) {
  json definition = TinyTokenizer({"<unk>"}, {});
  definition["model"]["vocab"].erase("\u00c3");  // byte C3
  definition["model"]["vocab"].erase("\u00a9");  // byte A9
  definition["model"]["unk_token"] = "<unk>";
  const int32_t unk = 256;
  EXPECT_THAT(Load(definition).Encode("a\u00e9b"), ElementsAre('a', unk, unk, 'b'));
  definition["model"]["fuse_unk"] = true;
  EXPECT_THAT(Load(definition).Encode("a\u00e9b"), ElementsAre('a', unk, 'b'));
  definition["model"]["unk_token"] = nullptr;
  EXPECT_THAT(Load(definition).Encode("a\u00e9b"), ElementsAre('a', 'b'));
}

TEST(TokenizerTest, InvalidUtf8IsRejected) {
  const Tokenizer tokenizer = Load(TinyTokenizer({}, {}));
  for (const std::string bad :
       {"\xff", "ab\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "x\x80y"}) {
    EXPECT_THROW(tokenizer.Encode(bad), TokenizerError) << "byte length " << bad.size();
  }
  try {
    tokenizer.Encode("ok\xff");
  } catch (const TokenizerError& error) {
    EXPECT_THAT(error.what(), HasSubstr("UTF-8"));
    EXPECT_THAT(error.what(), HasSubstr("offset 2"));
  }
}

TEST(TokenizerTest, DecodeReplacesInvalidBytesLikeHuggingFace) {
  const Tokenizer tokenizer = Load(TinyTokenizer({}, {}));
  // Byte tokens have the byte's value as id. One U+FFFD per maximal ill-formed subpart.
  EXPECT_EQ(tokenizer.Decode(std::vector<int32_t>{0xE2, 0x82, 'a'}), "\uFFFDa");
  EXPECT_EQ(tokenizer.Decode(std::vector<int32_t>{0xF0, 0x80, 0x80}), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(tokenizer.Decode(std::vector<int32_t>{0xFF, 0xC3, 0xA9}), "\uFFFD\u00e9");
  EXPECT_EQ(tokenizer.Decode(std::vector<int32_t>{0xED, 0xA0, 0x80}), "\uFFFD\uFFFD\uFFFD");
  // Unknown ids are skipped.
  EXPECT_EQ(tokenizer.Decode(std::vector<int32_t>{'a', -1, 99999, 'b'}), "ab");
  EXPECT_EQ(tokenizer.TokenText(99999), "");
}

TEST(TokenizerTest, IncrementalDecoderHoldsBackSplitCharacters) {
  const Tokenizer tokenizer = Load(TinyTokenizer({}, {}));
  IncrementalDecoder decoder(tokenizer);
  EXPECT_EQ(decoder.Push('a'), "a");
  EXPECT_EQ(decoder.Push(0xF0), "");  // 😀 = F0 9F 98 80
  EXPECT_EQ(decoder.Push(0x9F), "");
  EXPECT_EQ(decoder.Push(0x98), "");
  EXPECT_EQ(decoder.Push(0x80), "\U0001F600");
  EXPECT_EQ(decoder.Push(0xC3), "");
  EXPECT_EQ(decoder.Flush(), "\uFFFD");
  EXPECT_EQ(decoder.Flush(), "");
}

TEST(TokenizerTest, IncrementalDecoderMatchesDecodeOnAnyByteSequence) {
  json definition = TinyTokenizer({}, {});
  definition["added_tokens"] = json::array({AddedTokenJson(256, "<|eot|>", true)});
  const Tokenizer tokenizer = Load(definition);
  const std::vector<std::vector<int32_t>> streams = {
      {0xE2, 0x82, 0xAC, 'x'},  {0xE2, 0x82, 'x', 0xAC}, {0xF0, 0x9F, 256, 0x98, 0x80},
      {0xC3, 0xC3, 0xA9, 0xA9}, {0xF4, 0x90, 0x80},      {'a', 0xED, 0x9F, 0xBF, 0xED, 0xA0}};
  for (bool skip_special : {false, true}) {
    for (const std::vector<int32_t>& ids : streams) {
      IncrementalDecoder decoder(tokenizer, skip_special);
      std::string text;
      for (int32_t id : ids) {
        const std::string piece = decoder.Push(id);
        text += piece;
      }
      text += decoder.Flush();
      EXPECT_EQ(text, tokenizer.Decode(ids, skip_special)) << json(ids).dump();
    }
  }
}

TEST(TokenizerTest, EncodeIsThreadSafe) {
  const Tokenizer tokenizer =
      Load(TinyTokenizer({"ab", "abc", "\u0120ab"}, {"a b", "ab c", "\u0120 ab"}));
  std::string text;
  for (int i = 0; i < 2000; ++i)
    text += i % 3 ? " abc" : " ab" + std::to_string(i);
  const std::vector<int32_t> expected = tokenizer.Encode(text);
  std::vector<std::thread> threads;
  std::vector<int> same(8);
  for (size_t t = 0; t < same.size(); ++t) {
    threads.emplace_back([&, t] { same[t] = tokenizer.Encode(text) == expected; });
  }
  for (std::thread& thread : threads)
    thread.join();
  for (size_t t = 0; t < same.size(); ++t)
    EXPECT_TRUE(same[t]) << "thread " << t;
  EXPECT_EQ(tokenizer.Decode(expected), text);
}

TEST(TokenizerTest, WhiteSpaceClassesFollowOniguruma) {
  // Oniguruma's \s is Unicode White_Space; U+180E (a format character now) is not in it.
  const SplitRegex whitespace = SplitRegex::FromPattern(R"(\s+)", "test");
  std::vector<std::string_view> pieces;
  whitespace.SplitIsolated("a\u180Eb", pieces);
  EXPECT_THAT(pieces, ElementsAre("a\u180Eb"));
  pieces.clear();
  whitespace.SplitIsolated("a\u2003\u0085b", pieces);
  EXPECT_THAT(pieces, ElementsAre("a", "\u2003\u0085", "b"));
  // Escaped backslashes and brackets keep their meaning.
  const SplitRegex backslash_s = SplitRegex::FromPattern(R"(\\s)", "test");
  pieces.clear();
  backslash_s.SplitIsolated("a\\sb", pieces);
  EXPECT_THAT(pieces, ElementsAre("a", "\\s", "b"));
  const SplitRegex bracket_or_space = SplitRegex::FromPattern(R"([\]\s]+)", "test");
  pieces.clear();
  bracket_or_space.SplitIsolated("a] \u3000b", pieces);
  EXPECT_THAT(pieces, ElementsAre("a", "] \u3000", "b"));
}

TEST(TokenizerTest, LoadsFromAFile) {
  const std::filesystem::path directory =
      std::filesystem::temp_directory_path() / ("tokenizer_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(directory);
  const std::filesystem::path path = directory / "tokenizer.json";
  std::ofstream(path) << TinyTokenizer({"ab"}, {"a b"}).dump();
  const Tokenizer tokenizer = Tokenizer::FromFile(path);
  EXPECT_EQ(tokenizer.Encode("ab"), Ids(tokenizer, {"ab"}));

  std::ofstream(path) << "{\"model\": ";
  try {
    Tokenizer::FromFile(path);
    ADD_FAILURE() << "corrupt file loaded";
  } catch (const TokenizerError& error) {
    EXPECT_THAT(error.what(), HasSubstr(path.string()));
    EXPECT_THAT(error.what(), HasSubstr("not valid JSON"));
  }
  std::filesystem::remove_all(directory);
  try {
    Tokenizer::FromFile(path);
    ADD_FAILURE() << "missing file loaded";
  } catch (const TokenizerError& error) {
    EXPECT_THAT(error.what(), HasSubstr(path.string()));
  }
}

TEST(TokenizerTest, UnsupportedFilesNameTheFileAndKey) {
  const json base = TinyTokenizer({"ab"}, {"a b"});
  struct Case {
    std::string expected_key;
    std::function<void(json&)> change;
  };
  const std::vector<Case> cases = {
      {"model.type", [](json& j) { j["model"]["type"] = "WordPiece"; }},
      {"model.byte_fallback", [](json& j) { j["model"]["byte_fallback"] = true; }},
      {"model.dropout", [](json& j) { j["model"]["dropout"] = 0.1; }},
      {"model.continuing_subword_prefix",
       [](json& j) { j["model"]["continuing_subword_prefix"] = "##"; }},
      {"model.merges[0]", [](json& j) { j["model"]["merges"] = json::array({"a zz"}); }},
      {"model.merges[1]",
       [](json& j) {
         j["model"]["merges"] = json::array({"a b", "ab"});
       }},
      {"model.vocab", [](json& j) { j["model"].erase("vocab"); }},
      {"model.unk_token", [](json& j) { j["model"]["unk_token"] = "<unk>"; }},
      {"normalizer.type",
       [](json& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       }},
      {"normalizer.normalizers[1].type",
       [](json& j) {
         j["normalizer"] = {
             {"type", "Sequence"},
             {"normalizers", json::array({json{{"type", "NFC"}}, json{{"type", "NFKC"}}})}};
       }},
      {"pre_tokenizer.pretokenizers[0].type",
       [](json& j) {
         j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Whitespace"}};
       }},
      {"pre_tokenizer.pretokenizers[0].behavior",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }},
      {"pre_tokenizer.pretokenizers[0].invert",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; }},
      {"pre_tokenizer.pretokenizers[0].pattern.Regex",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; }},
      {"pre_tokenizer", [](json& j) { j["pre_tokenizer"] = nullptr; }},
      {"pre_tokenizer.pretokenizers[2]",
       [](json& j) {
         j["pre_tokenizer"]["pretokenizers"].push_back(j["pre_tokenizer"]["pretokenizers"][0]);
       }},
      {"decoder.type",
       [](json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       }},
      {"decoder", [](json& j) { j["decoder"] = nullptr; }},
      {"truncation",
       [](json& j) {
         j["truncation"] = {{"max_length", 8}};
       }},
      {"added_tokens[0].content",
       [](json& j) {
         j["added_tokens"] = json::array({json{{"id", 300}}});
       }},
  };
  for (const Case& test : cases) {
    json definition = base;
    test.change(definition);
    const std::string error = LoadError(definition);
    EXPECT_THAT(error, HasSubstr("tiny.json: " + test.expected_key)) << test.expected_key;
  }
  EXPECT_THAT(LoadError(json::array()), HasSubstr("tiny.json"));
  try {
    Tokenizer::FromJson("not json", "broken.json");
    ADD_FAILURE() << "loaded";
  } catch (const TokenizerError& error) {
    EXPECT_THAT(error.what(), HasSubstr("broken.json: not valid JSON"));
  }
}

}  // namespace
}  // namespace gistmem::model
