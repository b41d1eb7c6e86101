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
  std::span<const int64_t> positions;  // continue at the cache's next_position()
  std::span<const int64_t> clocks;     // the memory policy's rule (model/kv_cache.h)
  std::span<const model::EntryVisibility> visibility;
  int64_t logits_row = 0;           // the row whose logits come back (the last raw token)
  model::KvCache* cache = nullptr;  // the step's K/V rows are appended here
};

struct StepOutputs {
  std::vector<std::vector<float>> logits;  // per step: vocab_size values of its logits_row
  std::string error;  // non-empty when the step failed; the caches may then be partial
};

StepOutputs ForwardBatch(model::CpuTransformer& model, std::span<const SequenceStep> steps);

}  // namespace gistmem::service
