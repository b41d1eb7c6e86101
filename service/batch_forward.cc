#include "service/batch_forward.h"

#include <exception>

namespace gistmem::service {

StepOutputs ForwardBatch(model::CpuTransformer& model, std::span<const SequenceStep> steps) {
  std::vector<model::SequenceChunk> chunks;
  chunks.reserve(steps.size());
  for (const SequenceStep& step : steps) {
    model::SequenceChunk& chunk = chunks.emplace_back();
    chunk.tokens = step.tokens;
    chunk.positions = step.positions;
    chunk.cache = step.cache;
    chunk.mode = model::LogitsMode::kRow;
    chunk.logits_row = step.logits_row;
    chunk.clocks = step.clocks;
    chunk.visibility = step.visibility;
  }
  StepOutputs outputs;
  try {
    outputs.logits = model.ForwardBatch(chunks);
  } catch (const std::exception& error) {
    outputs.error = error.what();
  }
  return outputs;
}

}  // namespace gistmem::service
