// A Llama-family checkpoint on the device: matrices in bf16 (the checkpoint's [out, in]
// layout; q|k|v and gate|up concatenated along `out` so each is one GEMM), norms and biases
// in fp32. Biases the config does not call for stay empty (null).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "model/backend/cuda/device_buffer.h"
#include "model/config.h"
#include "model/weights.h"

namespace gistmem::cuda {

struct CudaLayerWeights {
  DeviceBuffer input_norm, post_attention_norm;  // fp32 [hidden]
  DeviceBuffer qkv;                              // bf16 [q_dim + 2 * kv_dim, hidden]
  DeviceBuffer qkv_bias;                         // fp32 [q_dim + 2 * kv_dim] or empty
  DeviceBuffer o, o_bias;                        // bf16 [hidden, q_dim]; fp32 [hidden]
  DeviceBuffer gate_up, gate_up_bias;            // bf16 [2 * inter, hidden]; fp32 [2 * inter]
  DeviceBuffer down, down_bias;                  // bf16 [hidden, inter]; fp32 [hidden]
};

struct CudaWeights {
  DeviceBuffer embedding;   // bf16 [vocab, hidden]
  DeviceBuffer final_norm;  // fp32 [hidden]
  DeviceBuffer lm_head;     // bf16 [vocab, hidden]; empty when tied to the embedding
  std::vector<CudaLayerWeights> layers;

  const void* output_projection() const {
    return lm_head.get() != nullptr ? lm_head.get() : embedding.get();
  }

  // Reads and uploads every tensor the config calls for. INVALID_ARGUMENT naming a missing or
  // misshapen tensor (the checkpoint's WeightsError, caught); RESOURCE_EXHAUSTED when the
  // device is out of memory. Tied checkpoints may carry a copy of lm_head: the tie wins.
  static absl::StatusOr<CudaWeights> Load(const model::Checkpoint& checkpoint,
                                          const model::ModelConfig& config);
};

}  // namespace gistmem::cuda
