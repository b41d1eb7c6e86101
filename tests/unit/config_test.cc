// config.json parsing: the three supported families, both RoPE spellings (transformers 4's
// "rope_theta" + "rope_scaling", transformers 5's "rope_parameters"), and every rejection.
#include "model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <string>

namespace gistmem::model {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A Llama-3.2-1B-like config (GQA, llama3 scaling) in the transformers 4 spelling.
json LlamaConfig() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "attention_bias": false,
    "mlp_bias": false,
    "tie_word_embeddings": true,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "torch_dtype": "bfloat16",
    "pretraining_tp": 1,
    "use_cache": true,
    "transformers_version": "4.45.0"
  })");
}

// A Qwen2.5-0.5B-like config in the transformers 5 spelling.
json Qwen2Config() {
  return json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 2,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "max_window_layers": 21,
    "rms_norm_eps": 1e-06,
    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
    "sliding_window": 32768,
    "use_sliding_window": false,
    "layer_types": ["full_attention", "full_attention"],
    "tie_word_embeddings": true,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "dtype": "bfloat16"
  })");
}

json MistralConfig() {
  return json::parse(R"({
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": false,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16"
  })");
}

ModelConfig Parse(const json& config) {
  return ModelConfig::FromJson(config.dump());
}

// The ConfigError message for `config`, or "" when it parses.
std::string ErrorOf(const json& config) {
  try {
    Parse(config);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigTest, LlamaWithGqaAndLlama3ScalingInRopeScaling) {
  const ModelConfig c = Parse(LlamaConfig());
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 8192);
  EXPECT_EQ(c.num_layers, 16);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.q_dim(), 2048);
  EXPECT_EQ(c.kv_dim(), 512);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling->low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling->high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_THAT(c.bos_token_ids, ElementsAre(128000));
  EXPECT_THAT(c.eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(ConfigTest, LlamaWithLlama3ScalingInTransformers5RopeParameters) {
  json j = LlamaConfig();
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                          {"factor", 32.0},          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const ModelConfig c = Parse(j);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(*c.rope_scaling, *Parse(LlamaConfig()).rope_scaling);
  EXPECT_EQ(c.torch_dtype, "float16");
}

TEST(ConfigTest, OlderRopeScalingSpellings) {
  json j = LlamaConfig();
  j["rope_scaling"].erase("rope_type");
  j["rope_scaling"]["type"] = "llama3";  // the pre-4.43 key
  EXPECT_TRUE(Parse(j).rope_scaling.has_value());

  j["rope_scaling"] = nullptr;
  EXPECT_FALSE(Parse(j).rope_scaling.has_value());

  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_FALSE(Parse(j).rope_scaling.has_value());

  j.erase("rope_scaling");
  j.erase("rope_theta");
  EXPECT_DOUBLE_EQ(Parse(j).rope_theta, 10000.0);  // transformers' default
}

TEST(ConfigTest, RopeStatedTwiceMustAgree) {
  json j = LlamaConfig();
  j["rope_parameters"] = j["rope_scaling"];
  j["rope_parameters"]["rope_theta"] = 500000.0;
  EXPECT_DOUBLE_EQ(Parse(j).rope_theta, 500000.0);

  j["rope_parameters"]["rope_theta"] = 10000.0;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"rope_theta\" and \"rope_parameters.rope_theta\" disagree"));

  j["rope_parameters"]["rope_theta"] = 500000.0;
  j["rope_parameters"]["factor"] = 8.0;
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("\"rope_parameters\" and \"rope_scaling\" describe different RoPE"));
}

TEST(ConfigTest, Qwen2WithTiedEmbeddings) {
  const ModelConfig c = Parse(Qwen2Config());
  EXPECT_EQ(c.architecture, Architecture::kQwen2);
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_EQ(c.head_dim, 64);  // hidden_size / num_attention_heads
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1000000.0);
  EXPECT_FALSE(c.rope_scaling.has_value());
  // use_sliding_window is false, so qwen2's sliding_window is inert.
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_THAT(c.bos_token_ids, ElementsAre(151643));
  EXPECT_THAT(c.eos_token_ids, ElementsAre(151645));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(ConfigTest, MistralWithSlidingWindow) {
  const ModelConfig c = Parse(MistralConfig());
  EXPECT_EQ(c.architecture, Architecture::kMistral);
  ASSERT_TRUE(c.sliding_window.has_value());
  EXPECT_EQ(*c.sliding_window, 4096);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.tie_word_embeddings);

  json j = MistralConfig();
  j["sliding_window"] = nullptr;
  EXPECT_FALSE(Parse(j).sliding_window.has_value());
}

TEST(ConfigTest, DefaultsForOptionalKeys) {
  const json j = {{"model_type", "llama"},    {"vocab_size", 100},      {"hidden_size", 64},
                  {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                  {"bos_token_id", nullptr},  {"eos_token_id", nullptr}};
  const ModelConfig c = Parse(j);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias);
  EXPECT_TRUE(c.bos_token_ids.empty());
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_EQ(c.torch_dtype, "");
}

TEST(ConfigTest, ModelTypeMayComeFromArchitecturesAlone) {
  json j = MistralConfig();
  j.erase("model_type");
  EXPECT_EQ(Parse(j).architecture, Architecture::kMistral);
}

TEST(ConfigTest, LlamaAttentionAndMlpBias) {
  json j = LlamaConfig();
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  const ModelConfig c = Parse(j);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
  EXPECT_TRUE(c.mlp_bias);
}

TEST(ConfigTest, ExplicitHeadDimOverridesHiddenOverHeads) {
  json j = LlamaConfig();
  j["hidden_size"] = 100;  // not a multiple of 32 heads: head_dim must be given
  j["head_dim"] = 128;
  EXPECT_EQ(Parse(j).head_dim, 128);
  j.erase("head_dim");
  EXPECT_THAT(ErrorOf(j), HasSubstr("no \"head_dim\" given"));
}

TEST(ConfigTest, RejectsUnsupportedModelType) {
  json j = LlamaConfig();
  j["model_type"] = "gpt2";
  EXPECT_EQ(ErrorOf(j),
            "config.json: unsupported \"model_type\": \"gpt2\" (supported: llama, qwen2, mistral)");
}

TEST(ConfigTest, RejectsUnsupportedOrMismatchedArchitectures) {
  json j = LlamaConfig();
  j["architectures"] = {"LlamaForSequenceClassification"};
  EXPECT_THAT(ErrorOf(j), HasSubstr("unsupported \"architectures\" entry "
                                    "\"LlamaForSequenceClassification\""));
  j["architectures"] = {"Qwen2ForCausalLM"};
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"architectures\" entry \"Qwen2ForCausalLM\" does not "
                                    "match \"model_type\": \"llama\""));
  j["architectures"] = "LlamaForCausalLM";
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"architectures\" must be a non-empty list of strings"));
  j.erase("architectures");
  j.erase("model_type");
  EXPECT_THAT(ErrorOf(j), HasSubstr("missing required key \"model_type\""));
}

TEST(ConfigTest, RejectsMissingRequiredKeys) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads"}) {
    json j = LlamaConfig();
    j.erase(key);
    EXPECT_EQ(ErrorOf(j), std::string("config.json: missing required key \"") + key + "\"");
  }
}

TEST(ConfigTest, RejectsNonPositiveSizes) {
  for (const char* key :
       {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"}) {
    json j = LlamaConfig();
    j[key] = 0;
    EXPECT_THAT(ErrorOf(j), HasSubstr(std::string("\"") + key + "\" must be positive, got 0"))
        << key;
  }
  json j = MistralConfig();
  j["sliding_window"] = -1;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"sliding_window\" must be positive, got -1"));
}

TEST(ConfigTest, RejectsWrongJsonTypes) {
  json j = LlamaConfig();
  j["hidden_size"] = "2048";
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"hidden_size\" must be an integer, got \"2048\""));
  j = LlamaConfig();
  j["num_hidden_layers"] = 16.5;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"num_hidden_layers\" must be an integer, got 16.5"));
  j = LlamaConfig();
  j["rms_norm_eps"] = "1e-5";
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"rms_norm_eps\" must be a number"));
  j = LlamaConfig();
  j["tie_word_embeddings"] = 1;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"tie_word_embeddings\" must be true or false, got 1"));
  j = LlamaConfig();
  j["model_type"] = 7;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"model_type\" must be a string, got 7"));
  j = LlamaConfig();
  j["eos_token_id"] = {1, "2"};
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"eos_token_id\" must hold integers"));
  j = LlamaConfig();
  j["bos_token_id"] = "<s>";
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"bos_token_id\" must be an integer or a list of integers"));
  j = LlamaConfig();
  j["rope_scaling"]["factor"] = "32";
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"rope_scaling.factor\" must be a number, got \"32\""));
  j = LlamaConfig();
  j["rope_scaling"] = "llama3";
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"rope_scaling\" must be an object"));
  j = LlamaConfig();
  j["vocab_size"] = 18446744073709551615ull;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"vocab_size\" is out of range"));
}

TEST(ConfigTest, RejectsInvalidJson) {
  EXPECT_THROW(
      {
        try {
          ModelConfig::FromJson("{\"model_type\": ");
        } catch (const ConfigError& e) {
          EXPECT_THAT(e.what(), HasSubstr("not valid JSON"));
          throw;
        }
      },
      ConfigError);
  EXPECT_THAT(ErrorOf(json::array({1, 2})), HasSubstr("the top level must be a JSON object"));
}

TEST(ConfigTest, RejectsHeadsNotDivisibleByKvHeads) {
  json j = LlamaConfig();
  j["num_key_value_heads"] = 5;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"num_attention_heads\" (32) must be a multiple of "
                                    "\"num_key_value_heads\" (5)"));
}

TEST(ConfigTest, RejectsOddHeadDim) {
  json j = LlamaConfig();
  j["head_dim"] = 63;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"head_dim\" must be even for RoPE, got 63"));
}

TEST(ConfigTest, RejectsActivationOtherThanSilu) {
  json j = LlamaConfig();
  j["hidden_act"] = "gelu";
  EXPECT_THAT(ErrorOf(j), HasSubstr("unsupported \"hidden_act\": \"gelu\" (supported: silu)"));
}

TEST(ConfigTest, RejectsUnsupportedRopeTypes) {
  for (const char* type : {"linear", "dynamic", "yarn", "longrope"}) {
    json j = LlamaConfig();
    j["rope_scaling"] = {{"rope_type", type}, {"factor", 2.0}};
    EXPECT_THAT(ErrorOf(j), HasSubstr(std::string("unsupported RoPE scaling "
                                                  "\"rope_scaling.rope_type\": \"") +
                                      type + "\""));
  }
  json j = LlamaConfig();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_THAT(ErrorOf(j), HasSubstr("unsupported RoPE scaling \"rope_scaling.type\": \"linear\""));

  j = Qwen2Config();
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6}, {"factor", 4.0}};
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("unsupported RoPE scaling \"rope_parameters.rope_type\": \"yarn\""));
}

TEST(ConfigTest, RejectsIncompleteOrUnknownRopeKeys) {
  json j = LlamaConfig();
  j["rope_scaling"].erase("low_freq_factor");
  EXPECT_THAT(ErrorOf(j), HasSubstr("missing required key \"rope_scaling.low_freq_factor\""));
  j = LlamaConfig();
  j["rope_scaling"].erase("original_max_position_embeddings");
  EXPECT_THAT(ErrorOf(j), HasSubstr("missing required key "
                                    "\"rope_scaling.original_max_position_embeddings\""));
  j = LlamaConfig();
  j["rope_scaling"]["attention_factor"] = 1.5;
  EXPECT_THAT(ErrorOf(j), HasSubstr("unsupported key \"rope_scaling.attention_factor\" for "
                                    "RoPE type \"llama3\""));
  j = Qwen2Config();
  j["rope_parameters"]["factor"] = 4.0;  // meaningless for "default": refuse to guess
  EXPECT_THAT(ErrorOf(j), HasSubstr("unsupported key \"rope_parameters.factor\""));
  j = LlamaConfig();
  j["rope_scaling"]["high_freq_factor"] = 1.0;
  EXPECT_THAT(ErrorOf(j), HasSubstr("0 < low_freq_factor < high_freq_factor"));
}

TEST(ConfigTest, RejectsPartialRotary) {
  json j = Qwen2Config();
  j["rope_parameters"]["partial_rotary_factor"] = 0.5;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"rope_parameters.partial_rotary_factor\" is 0.5"));
  j = LlamaConfig();
  j["partial_rotary_factor"] = 0.25;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"partial_rotary_factor\" is 0.25"));
  j["partial_rotary_factor"] = 1.0;
  EXPECT_EQ(ErrorOf(j), "");
}

TEST(ConfigTest, RejectsQwen2SlidingWindow) {
  json j = Qwen2Config();
  j["use_sliding_window"] = true;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"use_sliding_window\": true is not supported for qwen2"));
  j["use_sliding_window"] = "no";
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"use_sliding_window\" must be true or false"));
  j.erase("use_sliding_window");
  EXPECT_FALSE(Parse(j).sliding_window.has_value());
}

TEST(ConfigTest, RejectsLayerTypesThatDisagreeWithTheWindow) {
  json j = Qwen2Config();
  j["layer_types"] = {"full_attention", "sliding_attention"};
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"layer_types\"[1] is \"sliding_attention\""));
  j["layer_types"] = {"full_attention"};
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("\"layer_types\" has 1 entries but \"num_hidden_layers\" is 2"));
  j = MistralConfig();
  j["num_hidden_layers"] = 2;
  j["layer_types"] = {"sliding_attention", "sliding_attention"};
  EXPECT_EQ(ErrorOf(j), "");
}

TEST(ConfigTest, RejectsSlidingWindowForLlama) {
  json j = LlamaConfig();
  j["sliding_window"] = 4096;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"sliding_window\" is not supported for llama"));
}

TEST(ConfigTest, RejectsBiasKeysThatContradictTheFamily) {
  json j = Qwen2Config();
  j["attention_bias"] = false;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"attention_bias\" is not a qwen2 setting"));
  j = Qwen2Config();
  j["mlp_bias"] = true;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"mlp_bias\": true is not supported for qwen2"));
  j = MistralConfig();
  j["attention_bias"] = true;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"attention_bias\": true is not supported for mistral"));
  j = MistralConfig();
  j["mlp_bias"] = true;
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"mlp_bias\": true is not supported for mistral"));
  j = MistralConfig();
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  EXPECT_EQ(ErrorOf(j), "");
}

TEST(ConfigTest, RejectsQuantizedCheckpoints) {
  json j = LlamaConfig();
  j["quantization_config"] = {{"quant_method", "awq"}};
  EXPECT_THAT(ErrorOf(j), HasSubstr("\"quantization_config\""));
}

TEST(ConfigTest, FromFileNamesThePath) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("gistmem_config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::filesystem::path path = dir / "config.json";
  std::ofstream(path) << MistralConfig().dump(2);
  EXPECT_EQ(ModelConfig::FromFile(path).sliding_window, 4096);

  json bad = MistralConfig();
  bad["hidden_act"] = "relu";
  std::ofstream(path) << bad.dump();
  try {
    ModelConfig::FromFile(path);
    ADD_FAILURE() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path.string() + ": unsupported \"hidden_act\": \"relu\""));
  }
  try {
    ModelConfig::FromFile(dir / "absent.json");
    ADD_FAILURE() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("absent.json: cannot open"));
  }
  std::filesystem::remove_all(dir);
}

// The checkpoints transformers 5 wrote for the other tests parse as the families they are.
TEST(ConfigTest, ParsesTheFixtureCheckpoints) {
  const std::filesystem::path models =
      std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/models";
  const ModelConfig llama = ModelConfig::FromFile(models / "llama-gqa-bf16/config.json");
  EXPECT_EQ(llama.architecture, Architecture::kLlama);
  ASSERT_TRUE(llama.rope_scaling.has_value());
  EXPECT_EQ(llama.rope_scaling->original_max_position_embeddings, 64);
  const ModelConfig qwen = ModelConfig::FromFile(models / "qwen2-tied-f32/config.json");
  EXPECT_TRUE(qwen.tie_word_embeddings);
  EXPECT_TRUE(qwen.qkv_bias);
  const ModelConfig mistral = ModelConfig::FromFile(models / "mistral-window-f16/config.json");
  EXPECT_EQ(mistral.sliding_window, 8);
}

TEST(RopeInverseFrequenciesTest, UnscaledIsThetaToTheMinusTwoIOverHeadDim) {
  json j = Qwen2Config();
  j["hidden_size"] = 112;  // 14 heads of 8
  j["rope_parameters"]["rope_theta"] = 10000.0;
  const std::vector<double> inv_freq = RopeInverseFrequencies(Parse(j));
  // 10000^(-2i/8) = 10^(-i).
  ASSERT_EQ(inv_freq.size(), 4u);
  EXPECT_DOUBLE_EQ(inv_freq[0], 1.0);
  EXPECT_DOUBLE_EQ(inv_freq[1], 0.1);
  EXPECT_DOUBLE_EQ(inv_freq[2], 0.01);
  EXPECT_DOUBLE_EQ(inv_freq[3], 0.001);
}

TEST(RopeInverseFrequenciesTest, Llama3ScalingBands) {
  // head_dim 8 and theta 10^4 give inv_freq 10^-i, wavelengths 2*pi*10^i. With an old
  // context of 1024 and factors low 1 / high 4, the high-frequency band ends at wavelength
  // 256 and the low-frequency band starts past 1024: i = 0, 1 stay, i = 2 (wavelength 628)
  // is interpolated, i = 3 (wavelength 6283) is divided by the factor.
  json j = LlamaConfig();
  j["hidden_size"] = 256;
  j["head_dim"] = 8;
  j["rope_theta"] = 10000.0;
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 1024}};
  const std::vector<double> inv_freq = RopeInverseFrequencies(Parse(j));
  ASSERT_EQ(inv_freq.size(), 4u);
  EXPECT_DOUBLE_EQ(inv_freq[0], 1.0);
  EXPECT_DOUBLE_EQ(inv_freq[1], 0.1);
  const double smooth = (1024 * 0.01 / (2 * std::numbers::pi) - 1.0) / (4.0 - 1.0);
  EXPECT_NEAR(smooth, 0.2099, 1e-4);
  EXPECT_DOUBLE_EQ(inv_freq[2], (1 - smooth) * 0.01 / 8.0 + smooth * 0.01);
  EXPECT_DOUBLE_EQ(inv_freq[3], 0.001 / 8.0);
}

TEST(RopeInverseFrequenciesTest, Llama31LowestAndHighestFrequencies) {
  // Llama 3.1 8B: head_dim 128, theta 5e5, factor 8, old context 8192. The first frequency
  // (wavelength 2*pi) is untouched; the last, 5e5^(-126/128), has a wavelength far beyond
  // 8192 and is divided by 8.
  json j = LlamaConfig();
  j["hidden_size"] = 4096;
  j["head_dim"] = 128;
  j["rope_scaling"]["factor"] = 8.0;
  const std::vector<double> inv_freq = RopeInverseFrequencies(Parse(j));
  ASSERT_EQ(inv_freq.size(), 64u);
  EXPECT_DOUBLE_EQ(inv_freq[0], 1.0);
  EXPECT_DOUBLE_EQ(inv_freq[63], std::pow(500000.0, -126.0 / 128.0) / 8.0);
  // i = 20: 5e5^(-40/128) ~ 0.0166, wavelength ~ 379, below the high-frequency bound
  // 8192 / 4 = 2048, so it is untouched too.
  EXPECT_DOUBLE_EQ(inv_freq[20], std::pow(500000.0, -40.0 / 128.0));
}

}  // namespace
}  // namespace gistmem::model
