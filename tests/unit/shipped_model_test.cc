// The project's own model, models/gistmem-16k (trained and exported by training/), against
// what transformers and Hugging Face `tokenizers` gave for it on the GPU machine
// (tests/fixtures/gistmem-16k, written by training/export.py): the CPU runtime's logits, the
// tokenizer's ids, the Llama-3 chat rendering, and the files' contract (gist_config.json, the
// 16 MiB file limit, the tokenizer and config agreeing).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/engine.h"
#include "model/tokenizer/chat_template.h"
#include "model/tokenizer/tokenizer.h"
#include "model/weights.h"
#include "tests/unit/plain_sequence.h"

namespace gistmem::model {
namespace {

using nlohmann::json;

const std::filesystem::path kModel =
    std::filesystem::path(GISTMEM_SOURCE_DIR) / "models/gistmem-16k";
const std::filesystem::path kFixtures =
    std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/gistmem-16k";

json ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return json::parse(in);
}

std::vector<int32_t> Ids(const json& ids) {
  std::vector<int32_t> result;
  for (const json& id : ids)
    result.push_back(id.get<int32_t>());
  return result;
}

std::vector<int64_t> Iota(int64_t begin, size_t count) {
  std::vector<int64_t> positions(count);
  std::iota(positions.begin(), positions.end(), begin);
  return positions;
}

// Largest |got - want| in a row over the row's largest |want|, worst row.
double MaxRowRelativeError(const std::vector<float>& got, const std::vector<float>& want,
                           int64_t vocab) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t row = 0; row * vocab < want.size() && row * vocab < got.size(); ++row) {
    double diff = 0, scale = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const size_t i = row * vocab + v;
      diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
      scale = std::max(scale, std::fabs(double(want[i])));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

struct ReferenceCase {
  std::string name;
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // [tokens, vocab]
};

std::vector<ReferenceCase> LoadCases() {
  const json cases = ReadJson(kFixtures / "reference_cases.json").at("cases");
  const auto expected = SafetensorsFile::Open(kFixtures / "reference_logits.safetensors");
  std::vector<ReferenceCase> result;
  for (const json& c : cases) {
    result.push_back({c.at("name"), Ids(c.at("tokens")),
                      expected->tensors().at(c.at("logits").get<std::string>()).ToFloat32()});
  }
  return result;
}

TEST(ShippedModel, LogitsMatchTransformers) {
  const auto model = LoadCpu(kModel, 2);
  const int64_t vocab = model->config().vocab_size;
  const std::vector<ReferenceCase> cases = LoadCases();
  ASSERT_GE(cases.size(), 4u);
  for (const ReferenceCase& rc : cases) {
    ASSERT_EQ(rc.logits.size(), rc.tokens.size() * vocab) << rc.name;
    PlainSequence sequence(*model);
    const std::vector<float> logits =
        sequence.Forward(rc.tokens, Iota(0, rc.tokens.size()), LogitsMode::kAll);
    const double error = MaxRowRelativeError(logits, rc.logits, vocab);
    std::printf("%s (%zu tokens): max row-relative error %.3g\n", rc.name.c_str(), rc.tokens.size(),
                error);
    EXPECT_LE(error, 1e-4) << rc.name;
  }
}

TEST(ShippedModel, PrefillThenDecodeMatchesTransformers) {
  const auto model = LoadCpu(kModel, 2);
  const int64_t vocab = model->config().vocab_size;
  for (const ReferenceCase& rc : LoadCases()) {
    PlainSequence sequence(*model);
    const size_t prefill = rc.tokens.size() / 2;
    std::vector<float> logits;
    if (prefill > 0) {
      logits =
          sequence.Forward(std::span(rc.tokens).first(prefill), Iota(0, prefill), LogitsMode::kAll);
    }
    for (size_t i = prefill; i < rc.tokens.size(); ++i) {
      const std::vector<float> row = sequence.Forward(std::span(rc.tokens).subspan(i, 1),
                                                      Iota(int64_t(i), 1), LogitsMode::kLast);
      logits.insert(logits.end(), row.begin(), row.end());
    }
    EXPECT_LE(MaxRowRelativeError(logits, rc.logits, vocab), 1e-4) << rc.name;
  }
}

TEST(ShippedModel, TokenizerMatchesHuggingFace) {
  const Tokenizer tokenizer = Tokenizer::FromFile(kModel / "tokenizer.json");
  const json cases = ReadJson(kFixtures / "tokenizer_cases.json").at("cases");
  ASSERT_GE(cases.size(), 10u);
  for (const json& c : cases) {
    const std::string text = c.at("text");
    const std::vector<int32_t> ids = Ids(c.at("ids"));
    EXPECT_EQ(tokenizer.Encode(text), ids) << json(text).dump();
    EXPECT_EQ(tokenizer.Decode(ids), text) << json(text).dump();
  }
}

TEST(ShippedModel, ChatTemplateMatchesTransformers) {
  const Tokenizer tokenizer = Tokenizer::FromFile(kModel / "tokenizer.json");
  ASSERT_EQ(DetectChatFormat(tokenizer), ChatFormat::kLlama3);
  const ChatTemplateOptions options = ReadChatTemplateOptions(kModel / "tokenizer_config.json");
  EXPECT_EQ(options.bos_token, "<|begin_of_text|>");
  EXPECT_FALSE(options.always_add_generation_prompt);
  EXPECT_FALSE(options.qwen3);
  const json rows = ReadJson(kFixtures / "chat_template.json").at("rows");
  ASSERT_GE(rows.size(), 2u);
  for (const json& row : rows) {
    std::vector<ChatMessage> messages;
    for (const json& m : row.at("messages"))
      messages.push_back({m.at("role"), m.at("content")});
    const std::string text =
        RenderChat(ChatFormat::kLlama3, messages, row.at("add_generation_prompt"), options);
    EXPECT_EQ(text, row.at("text").get<std::string>()) << row.dump();
    EXPECT_EQ(tokenizer.Encode(text), Ids(row.at("ids"))) << row.dump();
  }
}

TEST(ShippedModel, FilesKeepTheContract) {
  const Tokenizer tokenizer = Tokenizer::FromFile(kModel / "tokenizer.json");
  const ModelConfig config = ModelConfig::FromFile(kModel / "config.json");
  EXPECT_EQ(config.architecture, Architecture::kLlama);
  EXPECT_EQ(config.vocab_size, tokenizer.vocab_size());
  EXPECT_LT(config.num_kv_heads, config.num_heads);  // GQA

  // gist_config.json: exactly the keys the C++ side reads, consistent with the contract.
  const json gist = ReadJson(kModel / "gist_config.json");
  std::set<std::string> keys;
  for (const auto& item : gist.items())
    keys.insert(item.key());
  EXPECT_EQ(keys, (std::set<std::string>{"gist_token_id", "ratios", "default_ratio", "sink_tokens",
                                         "window"}));
  EXPECT_EQ(gist.at("gist_token_id").get<int32_t>(), tokenizer.TokenId("<|gist|>").value());
  EXPECT_TRUE(tokenizer.IsSpecial(gist.at("gist_token_id").get<int32_t>()));
  EXPECT_EQ(gist.at("ratios"), json::parse("[4, 8, 16]"));
  EXPECT_EQ(gist.at("default_ratio").get<int>(), 8);
  EXPECT_EQ(gist.at("sink_tokens").get<int>(), 4);
  const int window = gist.at("window").get<int>();
  EXPECT_EQ(window, 64);
  for (const json& ratio : gist.at("ratios"))
    EXPECT_EQ(window % ratio.get<int>(), 0);  // W is a multiple of every r

  // Every shipped file stays under the repository's 16 MiB limit.
  for (const auto& entry : std::filesystem::directory_iterator(kModel)) {
    EXPECT_LE(entry.file_size(), 16u << 20) << entry.path();
  }
}

}  // namespace
}  // namespace gistmem::model
