#include "model/config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numbers>
#include <set>
#include <sstream>

namespace gistmem::model {
namespace {

using nlohmann::json;

// Messages carry no file name here; FromJson and FromFile prefix the source.
[[noreturn]] void Fail(const std::string& message) {
  throw ConfigError(message);
}

std::string Quoted(const std::string& text) {
  return "\"" + text + "\"";
}

// Typed access to one JSON object; keys are named with their path ("rope_scaling.factor")
// so an error points at the exact spot. Absent and null keys read as std::nullopt.
class ConfigObject {
 public:
  ConfigObject(const json& object, std::string prefix)
      : object_(object), prefix_(std::move(prefix)) {}

  const json* Find(const std::string& key) const {
    const auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  std::string Name(const std::string& key) const { return Quoted(prefix_ + key); }

  std::optional<int64_t> Int(const std::string& key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_number_integer()) {
      Fail(Name(key) + " must be an integer, got " + value->dump());
    }
    if (value->is_number_unsigned() &&
        value->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
      Fail(Name(key) + " is out of range: " + value->dump());
    }
    return value->get<int64_t>();
  }

  int64_t RequiredInt(const std::string& key) const {
    const std::optional<int64_t> value = Int(key);
    if (!value) Fail("missing required key " + Name(key));
    return *value;
  }

  std::optional<double> Number(const std::string& key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_number()) Fail(Name(key) + " must be a number, got " + value->dump());
    return value->get<double>();
  }

  std::optional<bool> Bool(const std::string& key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_boolean()) Fail(Name(key) + " must be true or false, got " + value->dump());
    return value->get<bool>();
  }

  std::optional<std::string> String(const std::string& key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_string()) Fail(Name(key) + " must be a string, got " + value->dump());
    return value->get<std::string>();
  }

  // bos/eos ids: an integer, a list of integers, or null.
  std::vector<int64_t> TokenIds(const std::string& key) const {
    const json* value = Find(key);
    if (value == nullptr) return {};
    if (value->is_number_integer()) return {*Int(key)};
    if (!value->is_array()) {
      Fail(Name(key) + " must be an integer or a list of integers, got " + value->dump());
    }
    std::vector<int64_t> ids;
    for (const json& id : *value) {
      if (!id.is_number_integer()) Fail(Name(key) + " must hold integers, got " + value->dump());
      ids.push_back(id.get<int64_t>());
    }
    return ids;
  }

 private:
  const json& object_;
  std::string prefix_;
};

void RequirePositive(int64_t value, const std::string& key) {
  if (value <= 0) Fail(Quoted(key) + " must be positive, got " + std::to_string(value));
}

struct KnownArchitecture {
  Architecture architecture;
  const char* model_type;
  const char* class_name;
  int64_t default_max_position_embeddings;  // transformers' config default
};

constexpr KnownArchitecture kKnownArchitectures[] = {
    {Architecture::kLlama, "llama", "LlamaForCausalLM", 2048},
    {Architecture::kQwen2, "qwen2", "Qwen2ForCausalLM", 32768},
    {Architecture::kMistral, "mistral", "MistralForCausalLM", 4096 * 32},
};

// "model_type" decides; "architectures", when present, must name the causal-LM class of the
// same family (a classification head, say, has different weights and outputs).
const KnownArchitecture& ParseArchitecture(const ConfigObject& j) {
  const KnownArchitecture* found = nullptr;
  if (const std::optional<std::string> model_type = j.String("model_type")) {
    for (const KnownArchitecture& known : kKnownArchitectures) {
      if (*model_type == known.model_type) found = &known;
    }
    if (found == nullptr) {
      Fail("unsupported \"model_type\": " + Quoted(*model_type) +
           " (supported: llama, qwen2, mistral)");
    }
  }
  if (const json* classes = j.Find("architectures")) {
    if (!classes->is_array() || classes->empty()) {
      Fail("\"architectures\" must be a non-empty list of strings, got " + classes->dump());
    }
    for (const json& entry : *classes) {
      if (!entry.is_string()) {
        Fail("\"architectures\" must be a list of strings, got " + classes->dump());
      }
      const std::string name = entry.get<std::string>();
      const KnownArchitecture* match = nullptr;
      for (const KnownArchitecture& known : kKnownArchitectures) {
        if (name == known.class_name) match = &known;
      }
      if (match == nullptr) {
        Fail("unsupported \"architectures\" entry " + Quoted(name) +
             " (supported: LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM)");
      }
      if (found != nullptr && found != match) {
        Fail("\"architectures\" entry " + Quoted(name) +
             " does not match \"model_type\": " + Quoted(found->model_type));
      }
      found = match;
    }
  }
  if (found == nullptr) Fail("missing required key \"model_type\"");
  return *found;
}

// transformers builds the rotary table over head_dim * partial_rotary_factor dimensions;
// the runtime rotates the whole head.
void CheckFullRotary(const ConfigObject& j) {
  const std::optional<double> factor = j.Number("partial_rotary_factor");
  if (factor && *factor != 1.0) {
    Fail(j.Name("partial_rotary_factor") + " is " + j.Find("partial_rotary_factor")->dump() +
         " but only 1.0 (the whole head rotates) is supported");
  }
}

struct RopeSettings {
  std::optional<double> theta;
  std::optional<Llama3RopeScaling> scaling;
};

// One RoPE object: "rope_parameters" (transformers 5) or "rope_scaling" (earlier). Only the
// "default" and "llama3" types exist here, and every key must mean something to that type.
RopeSettings ParseRopeObject(const json& value, const std::string& key) {
  if (!value.is_object()) Fail(Quoted(key) + " must be an object, got " + value.dump());
  const ConfigObject rope(value, key + ".");
  const bool has_rope_type = rope.Find("rope_type") != nullptr;
  const std::string type_key = has_rope_type ? "rope_type" : "type";
  const std::string type = rope.String(type_key).value_or("default");
  if (type != "default" && type != "llama3") {
    Fail("unsupported RoPE scaling " + rope.Name(type_key) + ": " + Quoted(type) +
         " (supported: default, llama3)");
  }
  std::set<std::string> known = {"rope_type", "type", "rope_theta", "partial_rotary_factor"};
  if (type == "llama3") {
    known.insert(
        {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"});
  }
  for (const auto& item : value.items()) {
    if (!known.contains(item.key())) {
      Fail("unsupported key " + rope.Name(item.key()) + " for RoPE type " + Quoted(type));
    }
  }
  CheckFullRotary(rope);

  RopeSettings settings;
  settings.theta = rope.Number("rope_theta");
  if (type == "default") return settings;
  auto required_number = [&](const std::string& name) {
    const std::optional<double> number = rope.Number(name);
    if (!number) Fail("missing required key " + rope.Name(name) + " for RoPE type \"llama3\"");
    return *number;
  };
  Llama3RopeScaling s;
  s.factor = required_number("factor");
  s.low_freq_factor = required_number("low_freq_factor");
  s.high_freq_factor = required_number("high_freq_factor");
  const std::optional<int64_t> old_context = rope.Int("original_max_position_embeddings");
  if (!old_context) {
    Fail("missing required key " + rope.Name("original_max_position_embeddings") +
         " for RoPE type \"llama3\"");
  }
  s.original_max_position_embeddings = *old_context;
  if (s.factor <= 0 || s.low_freq_factor <= 0 || s.high_freq_factor <= s.low_freq_factor ||
      s.original_max_position_embeddings <= 0) {
    Fail(Quoted(key) +
         ": llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
         "original_max_position_embeddings > 0");
  }
  settings.scaling = s;
  return settings;
}

// Top-level "rope_theta", "rope_parameters" and "rope_scaling" may each state the RoPE
// settings; whatever is stated more than once must agree, so no source is silently dropped.
void ParseRope(const ConfigObject& j, ModelConfig& c) {
  std::optional<RopeSettings> parameters, scaling;
  if (const json* value = j.Find("rope_parameters")) {
    parameters = ParseRopeObject(*value, "rope_parameters");
  }
  if (const json* value = j.Find("rope_scaling")) {
    scaling = ParseRopeObject(*value, "rope_scaling");
  }
  CheckFullRotary(j);

  const std::pair<std::optional<double>, const char*> thetas[] = {
      {j.Number("rope_theta"), "rope_theta"},
      {parameters ? parameters->theta : std::nullopt, "rope_parameters.rope_theta"},
      {scaling ? scaling->theta : std::nullopt, "rope_scaling.rope_theta"},
  };
  const char* theta_key = nullptr;
  for (const auto& [theta, key] : thetas) {
    if (!theta) continue;
    if (theta_key != nullptr && *theta != c.rope_theta) {
      Fail(Quoted(theta_key) + " and " + Quoted(key) + " disagree (" +
           std::to_string(c.rope_theta) + " vs " + std::to_string(*theta) + ")");
    }
    c.rope_theta = *theta;
    theta_key = key;
  }
  if (!(c.rope_theta > 0)) Fail("\"rope_theta\" must be positive");

  if (parameters && scaling && parameters->scaling != scaling->scaling) {
    Fail("\"rope_parameters\" and \"rope_scaling\" describe different RoPE scaling");
  }
  c.rope_scaling = parameters ? parameters->scaling : scaling ? scaling->scaling : std::nullopt;
}

// The projections' biases are fixed by the family in transformers except for Llama, whose
// "attention_bias" covers q/k/v/o and "mlp_bias" the MLP. A contradicting key is an error.
void ParseBiases(const ConfigObject& j, ModelConfig& c) {
  const std::optional<bool> attention_bias = j.Bool("attention_bias");
  const std::optional<bool> mlp_bias = j.Bool("mlp_bias");
  switch (c.architecture) {
    case Architecture::kLlama:
      c.qkv_bias = c.o_bias = attention_bias.value_or(false);
      c.mlp_bias = mlp_bias.value_or(false);
      return;
    case Architecture::kQwen2:
      if (attention_bias) {
        Fail(
            "\"attention_bias\" is not a qwen2 setting (qwen2 always biases q/k/v and never "
            "o_proj)");
      }
      c.qkv_bias = true;
      break;
    case Architecture::kMistral:
      if (attention_bias.value_or(false)) {
        Fail(
            "\"attention_bias\": true is not supported for mistral (its projections have no "
            "biases)");
      }
      break;
  }
  if (mlp_bias.value_or(false)) {
    Fail("\"mlp_bias\": true is not supported for " + c.model_type + " (its MLP has no biases)");
  }
}

// transformers 5 lists each layer's attention kind; every entry must match the one window
// setting the runtime applies to all layers.
void CheckLayerTypes(const ConfigObject& j, const ModelConfig& c) {
  const json* types = j.Find("layer_types");
  if (types == nullptr) return;
  if (!types->is_array()) Fail("\"layer_types\" must be a list of strings, got " + types->dump());
  if (int64_t(types->size()) != c.num_layers) {
    Fail("\"layer_types\" has " + std::to_string(types->size()) +
         " entries but \"num_hidden_layers\" is " + std::to_string(c.num_layers));
  }
  const std::string expected = c.sliding_window ? "sliding_attention" : "full_attention";
  for (size_t i = 0; i < types->size(); ++i) {
    const json& type = (*types)[i];
    if (!type.is_string() || type.get<std::string>() != expected) {
      Fail("\"layer_types\"[" + std::to_string(i) + "] is " + type.dump() + " but only " +
           Quoted(expected) + " layers are supported for this config");
    }
  }
}

void ParseAttentionWindow(const ConfigObject& j, ModelConfig& c) {
  switch (c.architecture) {
    case Architecture::kQwen2:
      // Qwen2's "sliding_window" and "max_window_layers" only act with use_sliding_window.
      if (j.Bool("use_sliding_window").value_or(false)) {
        Fail("\"use_sliding_window\": true is not supported for qwen2");
      }
      break;
    case Architecture::kMistral:
      c.sliding_window = j.Int("sliding_window");
      if (c.sliding_window) RequirePositive(*c.sliding_window, "sliding_window");
      break;
    case Architecture::kLlama:
      if (j.Find("sliding_window") != nullptr) {
        Fail("\"sliding_window\" is not supported for llama (only mistral)");
      }
      break;
  }
  CheckLayerTypes(j, c);
}

void ParseShape(const ConfigObject& j, const KnownArchitecture& known, ModelConfig& c) {
  c.vocab_size = j.RequiredInt("vocab_size");
  c.hidden_size = j.RequiredInt("hidden_size");
  c.intermediate_size = j.RequiredInt("intermediate_size");
  c.num_layers = j.RequiredInt("num_hidden_layers");
  c.num_heads = j.RequiredInt("num_attention_heads");
  RequirePositive(c.vocab_size, "vocab_size");
  RequirePositive(c.hidden_size, "hidden_size");
  RequirePositive(c.intermediate_size, "intermediate_size");
  RequirePositive(c.num_layers, "num_hidden_layers");
  RequirePositive(c.num_heads, "num_attention_heads");
  c.num_kv_heads = j.Int("num_key_value_heads").value_or(c.num_heads);
  RequirePositive(c.num_kv_heads, "num_key_value_heads");
  if (c.num_heads % c.num_kv_heads != 0) {
    Fail("\"num_attention_heads\" (" + std::to_string(c.num_heads) +
         ") must be a multiple of \"num_key_value_heads\" (" + std::to_string(c.num_kv_heads) +
         ")");
  }
  const std::optional<int64_t> head_dim = j.Int("head_dim");
  if (!head_dim && c.hidden_size % c.num_heads != 0) {
    Fail("\"hidden_size\" is not a multiple of \"num_attention_heads\" and no \"head_dim\" given");
  }
  c.head_dim = head_dim.value_or(c.hidden_size / c.num_heads);
  RequirePositive(c.head_dim, "head_dim");
  if (c.head_dim % 2 != 0) {
    Fail("\"head_dim\" must be even for RoPE, got " + std::to_string(c.head_dim));
  }
  c.max_position_embeddings =
      j.Int("max_position_embeddings").value_or(known.default_max_position_embeddings);
  RequirePositive(c.max_position_embeddings, "max_position_embeddings");
}

ModelConfig ParseConfig(const std::string& json_text) {
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) Fail("not valid JSON");
  if (!root.is_object()) Fail("the top level must be a JSON object");
  const ConfigObject j(root, "");

  ModelConfig c;
  const KnownArchitecture& known = ParseArchitecture(j);
  c.architecture = known.architecture;
  c.model_type = known.model_type;
  ParseShape(j, known, c);
  c.rms_norm_eps = j.Number("rms_norm_eps").value_or(c.rms_norm_eps);
  if (!(c.rms_norm_eps > 0)) Fail("\"rms_norm_eps\" must be positive");
  c.tie_word_embeddings = j.Bool("tie_word_embeddings").value_or(false);

  const std::string act = j.String("hidden_act").value_or("silu");
  if (act != "silu") Fail("unsupported \"hidden_act\": " + Quoted(act) + " (supported: silu)");
  if (j.Find("quantization_config") != nullptr) {
    Fail("\"quantization_config\" is present: quantized checkpoints are not supported");
  }
  ParseBiases(j, c);
  ParseRope(j, c);
  ParseAttentionWindow(j, c);
  c.bos_token_ids = j.TokenIds("bos_token_id");
  c.eos_token_ids = j.TokenIds("eos_token_id");
  // transformers 5 writes "dtype"; earlier versions "torch_dtype".
  c.torch_dtype = j.String("dtype").value_or(j.String("torch_dtype").value_or(""));
  return c;
}

}  // namespace

ModelConfig ModelConfig::FromJson(const std::string& json_text) {
  try {
    return ParseConfig(json_text);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("config.json: ") + e.what());
  }
}

ModelConfig ModelConfig::FromFile(const std::filesystem::path& config_json) {
  std::ifstream in(config_json, std::ios::binary);
  if (!in) throw ConfigError(config_json.string() + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return ParseConfig(text.str());
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
