#include "service/batch_forward.h"

#include <exception>

namespace gistmem::service {

StepOutputs ForwardBatch(model::CpuTransformer& model, std::span<const SequenceStep> steps) {
  std::vector<model::SequenceChunk> chunks;
  chunks.reserve(steps.size());
  for (const SequenceStep& step : steps) {
    chunks.push_back({step.tokens, step.positions, step.cache, model::LogitsMode::kLast});
  }
  StepOutputs outputs;
  try {
    outputs.last_logits = model.ForwardBatch(chunks);
  } catch (const std::exception& error) {
    outputs.error = error.what();
  }
  return outputs;
}

}  // namespace gistmem::service
