// The tokenizer against the real Llama-3 and Qwen3 tokenizer.json files (fetched by ctest's
// fetch_reference_tokenizers fixture) and the ids Hugging Face `tokenizers` gives for them
// (tests/fixtures/tokenizer_reference.json).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "model/tokenizer/chat_template.h"
#include "model/tokenizer/incremental_decoder.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"

namespace gistmem::model {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;

const std::filesystem::path kDownloads = GISTMEM_TOKENIZER_DOWNLOADS;
const std::filesystem::path kReferenceIds =
    std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/tokenizer_reference.json";

// Loading a real tokenizer takes most of a second, so each family is loaded once, and only
// when a test needs it (ctest runs every test in a process of its own).
const Tokenizer& Family(const std::string& name) {
  if (name == "llama3") {
    static const Tokenizer llama3 = Tokenizer::FromFile(kDownloads / "llama3/tokenizer.json");
    return llama3;
  }
  static const Tokenizer qwen3 = Tokenizer::FromFile(kDownloads / "qwen3/tokenizer.json");
  return qwen3;
}

std::string IncrementallyDecoded(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  IncrementalDecoder decoder(tokenizer);
  std::string text;
  for (int32_t id : ids)
    text += decoder.Push(id);
  return text + decoder.Flush();
}

// Varied text: code, prose in several scripts, emoji, odd whitespace.
std::string MixedCorpus(size_t min_bytes) {
  const std::vector<std::string> parts = {
      "def f(x):\n    return x ** 2\n",
      "The quick brown fox jumps over the lazy dog. ",
      "日本語のテキストです。中文分词测试，标点符号！",
      "Русский текст с пробелами ",
      "مرحبا بالعالم שלום עולם ",
      "family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin 👍🏽 ",
      "\r\n\r\n\t\t  \n",
      "1234567890 3.14159 -42 ",
      "I'm you're they've WE'LL ",
      "{\"key\": [1, 2, {\"nested\": null}]}",
      "\u00a0nbsp zero\u200bwidth ",
      "                                        x",
  };
  std::string text;
  for (size_t i = 0; text.size() < min_bytes; ++i)
    text += parts[(i * 7) % parts.size()];
  return text;
}

class ReferenceTokenizerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(kDownloads / GetParam() / "tokenizer.json"))
        << "run tests/fixtures/fetch_tokenizers.sh " << kDownloads << " (ctest does)";
  }
  const Tokenizer& tokenizer() const { return Family(GetParam()); }
};

TEST_P(ReferenceTokenizerTest, MatchesHuggingFaceOnEveryReferenceCase) {
  if (!std::filesystem::exists(kReferenceIds)) GTEST_SKIP() << kReferenceIds << " is absent";
  std::ifstream file(kReferenceIds);
  const json reference = json::parse(file);
  const json& cases = reference.at(GetParam()).at("cases");
  ASSERT_GT(cases.size(), 100u);
  for (const json& test : cases) {
    const std::string text = test.at("text");
    const std::vector<int32_t> ids = test.at("ids");
    const std::string decoded = test.at("decoded");
    EXPECT_EQ(tokenizer().Encode(text), ids) << "text: " << json(text).dump();
    EXPECT_EQ(tokenizer().Decode(ids), decoded) << "text: " << json(text).dump();
    EXPECT_EQ(IncrementallyDecoded(tokenizer(), ids), decoded) << "text: " << json(text).dump();
  }
}

TEST_P(ReferenceTokenizerTest, DecodeInvertsEncode) {
  const std::string text = MixedCorpus(20000);
  const std::vector<int32_t> ids = tokenizer().Encode(text);
  // Qwen3 normalizes to NFC; the corpus is already in NFC.
  EXPECT_EQ(tokenizer().Decode(ids), text);
  EXPECT_EQ(IncrementallyDecoded(tokenizer(), ids), text);
}

TEST_P(ReferenceTokenizerTest, SpecialTokensInTextAreSingleIds) {
  const bool llama = GetParam() == "llama3";
  const std::string special = llama ? "<|eot_id|>" : "<|im_end|>";
  const int32_t id = llama ? 128009 : 151645;
  EXPECT_EQ(tokenizer().TokenId(special), id);
  EXPECT_TRUE(tokenizer().IsSpecial(id));
  EXPECT_EQ(tokenizer().TokenText(id), special);
  const std::vector<int32_t> ids = tokenizer().Encode("a" + special + "b");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], id);
  EXPECT_EQ(tokenizer().Decode(ids), "a" + special + "b");
  EXPECT_EQ(tokenizer().Decode(ids, /*skip_special=*/true), "ab");
}

TEST_P(ReferenceTokenizerTest, WellKnownIds) {
  if (GetParam() == "llama3") {
    EXPECT_THAT(tokenizer().Encode(" hello world"), ElementsAre(24748, 1917));
    EXPECT_EQ(tokenizer().TokenId("<|begin_of_text|>"), 128000);
    EXPECT_EQ(tokenizer().vocab_size(), 128256);
  } else {
    EXPECT_THAT(tokenizer().Encode(" hello world"), ElementsAre(23811, 1879));
    EXPECT_EQ(tokenizer().TokenId("<|im_start|>"), 151644);
    // <think> is an added token that is not special.
    EXPECT_EQ(tokenizer().TokenId("<think>"), 151667);
    EXPECT_FALSE(tokenizer().IsSpecial(151667));
    EXPECT_EQ(tokenizer().vocab_size(), 151669);
  }
}

// Ids that Hugging Face tokenizers 0.23.2 gives for Unicode corners where regex engines
// differ (White_Space vs U+180E and U+0085, case folding of U+017F, non-ASCII numbers).
TEST_P(ReferenceTokenizerTest, UnicodeCornersMatchHuggingFace) {
  struct Case {
    std::string text;
    std::vector<int32_t> llama3, qwen3;
  };
  const std::vector<Case> cases = {
      {" \u180e x", {87189, 254, 236, 865}, {86089, 254, 236, 856}},
      {"a\u0085b  \u0085\n",
       {64, 116360, 65, 256, 116360, 198},
       {64, 126, 227, 65, 256, 126, 227, 198}},
      {"'\u017f 'S 'LL", {6, 129, 123, 364, 50, 364, 4178}, {6, 144815, 364, 50, 364, 4086}},
      {"\u2028line\u2029para",
       {378, 101, 1074, 378, 102, 15138},
       {378, 101, 1056, 378, 102, 14794}},
      {"x \u3000\u00a0 y", {87, 100267, 4194, 379}, {87, 220, 22441, 4102, 379}},
      {"e\u0301\u0345", {68, 54939, 137, 227}, {963, 137, 227}},
      {"\u0663\u00bd\u216b\u00b2\U0001d7d8",
       {117413, 27154, 71567, 104, 30556, 57352, 253, 246},
       {149, 96, 26062, 70467, 104, 29456, 56252, 253, 246}},
      {"\U000e0001\ufeff\u200d!",
       {175, 64319, 223, 3305, 102470, 0},
       {175, 63219, 223, 3225, 378, 235, 0}},
  };
  for (const Case& test : cases) {
    EXPECT_EQ(tokenizer().Encode(test.text), GetParam() == "llama3" ? test.llama3 : test.qwen3)
        << json(test.text).dump();
  }
}

TEST_P(ReferenceTokenizerTest, DigitsGroupInThreesForLlamaAndSinglyForQwen) {
  const std::vector<int32_t> ids = tokenizer().Encode("1234567");
  std::vector<std::string> pieces;
  for (int32_t id : ids)
    pieces.emplace_back(tokenizer().TokenText(id));
  if (GetParam() == "llama3") {
    EXPECT_THAT(pieces, ElementsAre("123", "456", "7"));
  } else {
    EXPECT_THAT(pieces, ElementsAre("1", "2", "3", "4", "5", "6", "7"));
  }
}

TEST_P(ReferenceTokenizerTest, QwenNormalizesToNfc) {
  const std::vector<int32_t> decomposed = tokenizer().Encode("cafe\u0301");
  if (GetParam() == "qwen3") {
    EXPECT_EQ(decomposed, tokenizer().Encode("caf\u00e9"));
    EXPECT_EQ(tokenizer().Decode(decomposed), "caf\u00e9");
  } else {
    EXPECT_EQ(tokenizer().Decode(decomposed), "cafe\u0301");
  }
}

TEST_P(ReferenceTokenizerTest, IncrementalDecodingNeverSplitsCharacters) {
  const std::string text = "emoji 😀😃 family 👨‍👩‍👧‍👦 中文 العربية";
  const std::vector<int32_t> ids = tokenizer().Encode(text);
  IncrementalDecoder decoder(tokenizer());
  std::string joined;
  for (int32_t id : ids) {
    const std::string piece = decoder.Push(id);
    EXPECT_FALSE(utf8::FindInvalid(piece)) << "piece is not valid UTF-8";
    joined += piece;
  }
  EXPECT_EQ(decoder.Flush(), "");
  EXPECT_EQ(joined, text);
}

TEST_P(ReferenceTokenizerTest, EncodesAMegabyteQuickly) {
  const std::string text = MixedCorpus(1 << 20);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tokenizer().Encode(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RecordProperty("encode_seconds_per_megabyte", std::to_string(seconds));
  // Typically well under 0.1 s; the bound leaves room for loaded machines and sanitizers.
  EXPECT_LT(seconds, 10.0);
  EXPECT_EQ(tokenizer().Decode(ids), text);
}

TEST_P(ReferenceTokenizerTest, ConcurrentEncodingAgrees) {
  const std::string text = MixedCorpus(50000);
  const std::vector<int32_t> expected = tokenizer().Encode(text);
  std::vector<int> agrees(6, 0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < agrees.size(); ++t) {
    threads.emplace_back([&, t] { agrees[t] = tokenizer().Encode(text) == expected; });
  }
  for (std::thread& thread : threads)
    thread.join();
  for (size_t t = 0; t < agrees.size(); ++t)
    EXPECT_TRUE(agrees[t]) << "thread " << t;
}

TEST_P(ReferenceTokenizerTest, ChatFormatAndTemplateOptionsComeFromTheFiles) {
  const ChatTemplateOptions options =
      ReadChatTemplateOptions(kDownloads / GetParam() / "tokenizer_config.json");
  if (GetParam() == "llama3") {
    EXPECT_EQ(DetectChatFormat(tokenizer()), ChatFormat::kLlama3);
    EXPECT_EQ(options.bos_token, "<|begin_of_text|>");
    // This Llama-3 template appends the assistant header unconditionally.
    EXPECT_TRUE(options.always_add_generation_prompt);
    EXPECT_FALSE(options.qwen3);
  } else {
    EXPECT_EQ(DetectChatFormat(tokenizer()), ChatFormat::kChatML);
    EXPECT_FALSE(options.always_add_generation_prompt);
    EXPECT_TRUE(options.qwen3);
  }
}

TEST_P(ReferenceTokenizerTest, RenderedChatsEncodeMarkersAsSpecialTokens) {
  const ChatFormat format = DetectChatFormat(tokenizer());
  const std::vector<ChatMessage> messages = {{"system", "Be brief."}, {"user", "Hi <3"}};
  const std::string prompt = RenderChat(format, messages, /*add_generation_prompt=*/true);
  const std::vector<int32_t> ids = tokenizer().Encode(prompt);
  int specials = 0;
  for (int32_t id : ids)
    specials += tokenizer().IsSpecial(id);
  // Llama-3: bos + 3 x (start, end header) + 2 eot; ChatML: 3 x im_start + 2 im_end.
  EXPECT_EQ(specials, format == ChatFormat::kLlama3 ? 9 : 5);
  EXPECT_EQ(tokenizer().Decode(ids), prompt);
}

INSTANTIATE_TEST_SUITE_P(Families, ReferenceTokenizerTest, ::testing::Values("llama3", "qwen3"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace gistmem::model
