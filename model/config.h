// Model hyper-parameters read from a Hugging Face `config.json` (Llama family).
//
// Only what the runtime implements is accepted: an unknown architecture, activation or rope
// scaling type is an error that names the offending key, never a silent default.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace gistmem::model {

enum class Architecture { kLlama, kQwen2, kMistral };

// Llama-3 style frequency-dependent RoPE scaling ("rope_type": "llama3").
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;

  bool operator==(const Llama3RopeScaling&) const = default;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string model_type;  // as written in config.json, for messages and fingerprints
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<Llama3RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama when "attention_bias" is true
  bool o_bias = false;    // Llama "attention_bias" also biases o_proj
  bool mlp_bias = false;
  // Mistral-style local attention: a query sees keys with q - k < sliding_window.
  std::optional<int64_t> sliding_window;
  std::vector<int64_t> bos_token_ids;
  std::vector<int64_t> eos_token_ids;
  std::string torch_dtype;  // "bfloat16", "float32", ... (informational)

  // Parses config.json text; throws ConfigError naming the key on anything unsupported.
  static ModelConfig FromJson(const std::string& json_text);
  static ModelConfig FromFile(const std::filesystem::path& config_json);

  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  int64_t q_dim() const { return num_heads * head_dim; }
};

// Per-dimension inverse RoPE frequencies (head_dim / 2 of them), scaling applied.
std::vector<double> RopeInverseFrequencies(const ModelConfig& config);

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace gistmem::model
