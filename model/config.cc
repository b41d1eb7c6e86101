#include "model/config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <sstream>

namespace gistmem::model {
namespace {

using nlohmann::json;

[[noreturn]] void Fail(const std::string& message) {
  throw ConfigError("config.json: " + message);
}

// Reads an integer key; `fallback` when absent (or null) unless required.
int64_t IntKey(const json& j, const std::string& key, std::optional<int64_t> fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (!fallback) Fail("missing required key \"" + key + "\"");
    return *fallback;
  }
  if (!it->is_number_integer()) Fail("\"" + key + "\" must be an integer, got " + it->dump());
  return it->get<int64_t>();
}

double NumberKey(const json& j, const std::string& key, double fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) Fail("\"" + key + "\" must be a number, got " + it->dump());
  return it->get<double>();
}

bool BoolKey(const json& j, const std::string& key, bool fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) Fail("\"" + key + "\" must be true or false, got " + it->dump());
  return it->get<bool>();
}

std::string StringKey(const json& j, const std::string& key, const std::string& fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) Fail("\"" + key + "\" must be a string, got " + it->dump());
  return it->get<std::string>();
}

// bos/eos ids may be an integer, a list of integers, or null.
std::vector<int64_t> TokenIds(const json& j, const std::string& key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (it->is_number_integer()) return {it->get<int64_t>()};
  if (it->is_array()) {
    std::vector<int64_t> ids;
    for (const json& id : *it) {
      if (!id.is_number_integer()) Fail("\"" + key + "\" must hold integers, got " + it->dump());
      ids.push_back(id.get<int64_t>());
    }
    return ids;
  }
  Fail("\"" + key + "\" must be an integer or a list of integers, got " + it->dump());
}

Architecture ParseArchitecture(const json& j, std::string& model_type) {
  model_type = StringKey(j, "model_type", "");
  if (model_type.empty()) Fail("missing required key \"model_type\"");
  if (model_type == "llama") return Architecture::kLlama;
  if (model_type == "qwen2") return Architecture::kQwen2;
  if (model_type == "mistral") return Architecture::kMistral;
  Fail("unsupported \"model_type\": \"" + model_type + "\" (supported: llama, qwen2, mistral)");
}

// RoPE settings live in "rope_parameters" (transformers 5) or in top-level "rope_theta" plus
// "rope_scaling" (earlier versions). Both carry "rope_type" (older files: "type").
void ParseRope(const json& j, ModelConfig& config) {
  const char* scaling_key = "rope_scaling";
  const json* scaling = nullptr;
  if (const auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) Fail("\"rope_parameters\" must be an object, got " + it->dump());
    scaling = &*it;
    scaling_key = "rope_parameters";
  } else if (const auto sit = j.find("rope_scaling"); sit != j.end() && !sit->is_null()) {
    if (!sit->is_object()) Fail("\"rope_scaling\" must be an object, got " + sit->dump());
    scaling = &*sit;
  }
  config.rope_theta = NumberKey(j, "rope_theta", 10000.0);
  if (scaling == nullptr) return;
  config.rope_theta = NumberKey(*scaling, "rope_theta", config.rope_theta);
  std::string type = StringKey(*scaling, "rope_type", "");
  if (type.empty()) type = StringKey(*scaling, "type", "default");
  const std::string where = std::string("\"") + scaling_key + "\"";
  if (type == "default") return;
  if (type != "llama3") {
    Fail("unsupported RoPE scaling " + where + ".rope_type \"" + type +
         "\" (supported: default, llama3)");
  }
  Llama3RopeScaling s;
  s.factor = NumberKey(*scaling, "factor", s.factor);
  s.low_freq_factor = NumberKey(*scaling, "low_freq_factor", s.low_freq_factor);
  s.high_freq_factor = NumberKey(*scaling, "high_freq_factor", s.high_freq_factor);
  s.original_max_position_embeddings =
      IntKey(*scaling, "original_max_position_embeddings", s.original_max_position_embeddings);
  if (s.factor <= 0 || s.low_freq_factor <= 0 || s.high_freq_factor <= s.low_freq_factor ||
      s.original_max_position_embeddings <= 0) {
    Fail(where +
         ": llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
         "original_max_position_embeddings > 0");
  }
  config.rope_scaling = s;
}

void ParseSlidingWindow(const json& j, ModelConfig& config) {
  if (config.architecture == Architecture::kQwen2) {
    // Qwen2 only uses its sliding_window when use_sliding_window is set.
    if (BoolKey(j, "use_sliding_window", false)) {
      Fail("\"use_sliding_window\": true is not supported for qwen2");
    }
    return;
  }
  const auto it = j.find("sliding_window");
  if (it == j.end() || it->is_null()) return;
  if (config.architecture != Architecture::kMistral) {
    Fail("\"sliding_window\" is only supported for mistral");
  }
  config.sliding_window = IntKey(j, "sliding_window", std::nullopt);
  if (*config.sliding_window <= 0) Fail("\"sliding_window\" must be positive");
}

void RequirePositive(int64_t value, const char* key) {
  if (value <= 0)
    Fail(std::string("\"") + key + "\" must be positive, got " + std::to_string(value));
}

}  // namespace

ModelConfig ModelConfig::FromJson(const std::string& json_text) {
  const json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) Fail("not valid JSON");
  if (!j.is_object()) Fail("the top level must be a JSON object");

  ModelConfig c;
  c.architecture = ParseArchitecture(j, c.model_type);
  c.vocab_size = IntKey(j, "vocab_size", std::nullopt);
  c.hidden_size = IntKey(j, "hidden_size", std::nullopt);
  c.intermediate_size = IntKey(j, "intermediate_size", std::nullopt);
  c.num_layers = IntKey(j, "num_hidden_layers", std::nullopt);
  c.num_heads = IntKey(j, "num_attention_heads", std::nullopt);
  RequirePositive(c.vocab_size, "vocab_size");
  RequirePositive(c.hidden_size, "hidden_size");
  RequirePositive(c.intermediate_size, "intermediate_size");
  RequirePositive(c.num_layers, "num_hidden_layers");
  RequirePositive(c.num_heads, "num_attention_heads");
  c.num_kv_heads = IntKey(j, "num_key_value_heads", c.num_heads);
  RequirePositive(c.num_kv_heads, "num_key_value_heads");
  if (c.num_heads % c.num_kv_heads != 0) {
    Fail("\"num_attention_heads\" (" + std::to_string(c.num_heads) +
         ") must be a multiple of \"num_key_value_heads\" (" + std::to_string(c.num_kv_heads) +
         ")");
  }
  if (c.hidden_size % c.num_heads != 0 && !j.contains("head_dim")) {
    Fail("\"hidden_size\" is not a multiple of \"num_attention_heads\" and no \"head_dim\" given");
  }
  c.head_dim = IntKey(j, "head_dim", c.hidden_size / c.num_heads);
  RequirePositive(c.head_dim, "head_dim");
  if (c.head_dim % 2 != 0) Fail("\"head_dim\" must be even for RoPE");
  c.max_position_embeddings = IntKey(j, "max_position_embeddings", 2048);
  c.rms_norm_eps = NumberKey(j, "rms_norm_eps", 1e-6);
  c.tie_word_embeddings = BoolKey(j, "tie_word_embeddings", false);

  const std::string act = StringKey(j, "hidden_act", "silu");
  if (act != "silu") Fail("unsupported \"hidden_act\": \"" + act + "\" (supported: silu)");

  if (c.architecture == Architecture::kQwen2) {
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
  } else {
    c.qkv_bias = c.o_bias = BoolKey(j, "attention_bias", false);
  }
  c.mlp_bias = BoolKey(j, "mlp_bias", false);
  ParseRope(j, c);
  ParseSlidingWindow(j, c);
  c.bos_token_ids = TokenIds(j, "bos_token_id");
  c.eos_token_ids = TokenIds(j, "eos_token_id");
  c.torch_dtype = StringKey(j, "dtype", StringKey(j, "torch_dtype", ""));
  return c;
}

ModelConfig ModelConfig::FromFile(const std::filesystem::path& config_json) {
  std::ifstream in(config_json, std::ios::binary);
  if (!in) throw ConfigError(config_json.string() + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return FromJson(text.str());
  } catch (const ConfigError& e) {
    throw ConfigError(config_json.string() + ": " + e.what());
  }
}

// As transformers computes them: base frequencies, then Llama-3's smooth interpolation
// between scaled low frequencies and untouched high frequencies.
std::vector<double> RopeInverseFrequencies(const ModelConfig& config) {
  const int64_t half = config.head_dim / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = 1.0 / std::pow(config.rope_theta, double(2 * i) / double(config.head_dim));
  }
  if (!config.rope_scaling) return inv_freq;
  const Llama3RopeScaling& s = *config.rope_scaling;
  const double old_context = double(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / s.low_freq_factor;
  const double high_freq_wavelen = old_context / s.high_freq_factor;
  for (double& f : inv_freq) {
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen > low_freq_wavelen) {
      f = f / s.factor;
    } else if (wavelen >= high_freq_wavelen) {
      const double smooth =
          (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = (1 - smooth) * f / s.factor + smooth * f;
    }
  }
  return inv_freq;
}

}  // namespace gistmem::model
