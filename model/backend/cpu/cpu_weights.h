// The weights of a Llama-family checkpoint widened to fp32, in the [out, in] layout of the
// checkpoint. Biases that the config does not call for stay empty.
#pragma once

#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace gistmem::model {

struct CpuLayerWeights {
  std::vector<float> input_norm, post_attention_norm;
  std::vector<float> q, k, v, o;
  std::vector<float> q_bias, k_bias, v_bias, o_bias;
  std::vector<float> gate, up, down;
  std::vector<float> gate_bias, up_bias, down_bias;
};

struct CpuWeights {
  std::vector<float> embedding;  // [vocab, hidden]
  std::vector<float> final_norm;
  std::vector<float> lm_head;  // [vocab, hidden]; empty when the embedding is reused
  std::vector<CpuLayerWeights> layers;

  const float* output_projection() const {
    return lm_head.empty() ? embedding.data() : lm_head.data();
  }

  // Reads every tensor the config calls for, checking its shape; throws WeightsError naming
  // a missing or misshapen tensor. Tied checkpoints may carry a copy of lm_head: the tie wins.
  static CpuWeights Load(const Checkpoint& checkpoint, const ModelConfig& config);
};

}  // namespace gistmem::model
