// One forward step over the rows of many sessions: the single place where the scheduler hands
// work to the model runtime. CpuTransformer::ForwardBatch stacks the rows of every sequence
// into shared matrix products (attention stays per sequence) and promises each sequence the
// logits it would get alone.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/backend/cpu/cpu_transformer.h"
#include "model/kv_cache.h"

namespace gistmem::service {

struct SequenceStep {
  std::span<const int32_t> tokens;
  std::span<const int64_t> positions;  // continue after the cache's last position
  model::KvCache* cache = nullptr;     // the step's K/V rows are appended here
};

struct StepOutputs {
  std::vector<std::vector<float>> last_logits;  // per step: vocab_size values of its last row
  std::string error;  // non-empty when the step failed; the caches may then be partial
};

StepOutputs ForwardBatch(model::CpuTransformer& model, std::span<const SequenceStep> steps);

}  // namespace gistmem::service
