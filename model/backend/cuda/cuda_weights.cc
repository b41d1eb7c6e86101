#include "model/backend/cuda/cuda_weights.h"

#include <string>

#include "model/backend/cuda/bf16.h"
#include "model/backend/cuda/cuda_status.h"

namespace gistmem::cuda {
namespace {

using model::Checkpoint;
using model::ModelConfig;
using model::TensorView;

// Collects tensor views by name (throws WeightsError, caught by Load) and uploads them.
class Uploader {
 public:
  explicit Uploader(const Checkpoint& checkpoint) : checkpoint_(checkpoint) {}

  const TensorView* View(const std::string& name, const std::vector<int64_t>& shape) const {
    return &checkpoint_.Get(name, shape);
  }
  absl::StatusOr<DeviceBuffer> Bf16(std::initializer_list<const TensorView*> views) const {
    return UploadAsBf16(std::span<const TensorView* const>(views.begin(), views.size()));
  }
  absl::StatusOr<DeviceBuffer> F32(std::initializer_list<const TensorView*> views) const {
    std::vector<float> host;
    for (const TensorView* view : views) {
      const std::vector<float> values = view->ToFloat32();
      host.insert(host.end(), values.begin(), values.end());
    }
    return DeviceBuffer::FromHost(std::span<const float>(host));
  }

 private:
  const Checkpoint& checkpoint_;
};

#define ASSIGN_OR_RETURN(lhs, expr)             \
  do {                                          \
    auto result_ = (expr);                      \
    if (!result_.ok()) return result_.status(); \
    lhs = std::move(*result_);                  \
  } while (false)

absl::StatusOr<CudaLayerWeights> LoadLayer(const Uploader& up, const ModelConfig& c,
                                           int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q_dim = c.q_dim(), kv_dim = c.kv_dim();
  CudaLayerWeights w;
  ASSIGN_OR_RETURN(w.input_norm, up.F32({up.View(p + "input_layernorm.weight", {hidden})}));
  ASSIGN_OR_RETURN(w.post_attention_norm,
                   up.F32({up.View(p + "post_attention_layernorm.weight", {hidden})}));
  ASSIGN_OR_RETURN(w.qkv, up.Bf16({up.View(p + "self_attn.q_proj.weight", {q_dim, hidden}),
                                   up.View(p + "self_attn.k_proj.weight", {kv_dim, hidden}),
                                   up.View(p + "self_attn.v_proj.weight", {kv_dim, hidden})}));
  if (c.qkv_bias) {
    ASSIGN_OR_RETURN(w.qkv_bias, up.F32({up.View(p + "self_attn.q_proj.bias", {q_dim}),
                                         up.View(p + "self_attn.k_proj.bias", {kv_dim}),
                                         up.View(p + "self_attn.v_proj.bias", {kv_dim})}));
  }
  ASSIGN_OR_RETURN(w.o, up.Bf16({up.View(p + "self_attn.o_proj.weight", {hidden, q_dim})}));
  if (c.o_bias) {
    ASSIGN_OR_RETURN(w.o_bias, up.F32({up.View(p + "self_attn.o_proj.bias", {hidden})}));
  }
  ASSIGN_OR_RETURN(w.gate_up, up.Bf16({up.View(p + "mlp.gate_proj.weight", {inter, hidden}),
                                       up.View(p + "mlp.up_proj.weight", {inter, hidden})}));
  ASSIGN_OR_RETURN(w.down, up.Bf16({up.View(p + "mlp.down_proj.weight", {hidden, inter})}));
  if (c.mlp_bias) {
    ASSIGN_OR_RETURN(w.gate_up_bias, up.F32({up.View(p + "mlp.gate_proj.bias", {inter}),
                                             up.View(p + "mlp.up_proj.bias", {inter})}));
    ASSIGN_OR_RETURN(w.down_bias, up.F32({up.View(p + "mlp.down_proj.bias", {hidden})}));
  }
  return w;
}

}  // namespace

absl::StatusOr<CudaWeights> CudaWeights::Load(const Checkpoint& checkpoint,
                                              const ModelConfig& config) {
  try {
    const Uploader up(checkpoint);
    CudaWeights w;
    const int64_t vocab = config.vocab_size, hidden = config.hidden_size;
    ASSIGN_OR_RETURN(w.embedding, up.Bf16({up.View("model.embed_tokens.weight", {vocab, hidden})}));
    ASSIGN_OR_RETURN(w.final_norm, up.F32({up.View("model.norm.weight", {hidden})}));
    if (!config.tie_word_embeddings) {
      ASSIGN_OR_RETURN(w.lm_head, up.Bf16({up.View("lm_head.weight", {vocab, hidden})}));
    }
    for (int64_t layer = 0; layer < config.num_layers; ++layer) {
      CudaLayerWeights layer_weights;
      ASSIGN_OR_RETURN(layer_weights, LoadLayer(up, config, layer));
      w.layers.push_back(std::move(layer_weights));
    }
    return w;
  } catch (const model::WeightsError& error) {
    return absl::InvalidArgumentError(error.what());
  }
}

}  // namespace gistmem::cuda
