#include "model/backend/cpu/cpu_weights.h"

#include <string>

namespace gistmem::model {
namespace {

class TensorReader {
 public:
  explicit TensorReader(const Checkpoint& checkpoint) : checkpoint_(checkpoint) {}

  std::vector<float> operator()(const std::string& name, const std::vector<int64_t>& shape) const {
    return checkpoint_.Get(name, shape).ToFloat32();
  }
  std::vector<float> If(bool wanted, const std::string& name,
                        const std::vector<int64_t>& shape) const {
    return wanted ? (*this)(name, shape) : std::vector<float>();
  }

 private:
  const Checkpoint& checkpoint_;
};

CpuLayerWeights LoadLayer(const TensorReader& read, const ModelConfig& c, int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q_dim = c.q_dim(), kv_dim = c.kv_dim();
  CpuLayerWeights w;
  w.input_norm = read(p + "input_layernorm.weight", {hidden});
  w.post_attention_norm = read(p + "post_attention_layernorm.weight", {hidden});
  w.q = read(p + "self_attn.q_proj.weight", {q_dim, hidden});
  w.k = read(p + "self_attn.k_proj.weight", {kv_dim, hidden});
  w.v = read(p + "self_attn.v_proj.weight", {kv_dim, hidden});
  w.o = read(p + "self_attn.o_proj.weight", {hidden, q_dim});
  w.q_bias = read.If(c.qkv_bias, p + "self_attn.q_proj.bias", {q_dim});
  w.k_bias = read.If(c.qkv_bias, p + "self_attn.k_proj.bias", {kv_dim});
  w.v_bias = read.If(c.qkv_bias, p + "self_attn.v_proj.bias", {kv_dim});
  w.o_bias = read.If(c.o_bias, p + "self_attn.o_proj.bias", {hidden});
  w.gate = read(p + "mlp.gate_proj.weight", {inter, hidden});
  w.up = read(p + "mlp.up_proj.weight", {inter, hidden});
  w.down = read(p + "mlp.down_proj.weight", {hidden, inter});
  w.gate_bias = read.If(c.mlp_bias, p + "mlp.gate_proj.bias", {inter});
  w.up_bias = read.If(c.mlp_bias, p + "mlp.up_proj.bias", {inter});
  w.down_bias = read.If(c.mlp_bias, p + "mlp.down_proj.bias", {hidden});
  return w;
}

}  // namespace

CpuWeights CpuWeights::Load(const Checkpoint& checkpoint, const ModelConfig& config) {
  const TensorReader read(checkpoint);
  CpuWeights w;
  w.embedding = read("model.embed_tokens.weight", {config.vocab_size, config.hidden_size});
  w.final_norm = read("model.norm.weight", {config.hidden_size});
  w.lm_head = read.If(!config.tie_word_embeddings, "lm_head.weight",
                      {config.vocab_size, config.hidden_size});
  for (int64_t layer = 0; layer < config.num_layers; ++layer)
    w.layers.push_back(LoadLayer(read, config, layer));
  return w;
}

}  // namespace gistmem::model
