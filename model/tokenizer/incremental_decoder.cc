#include "model/tokenizer/incremental_decoder.h"

#include "model/tokenizer/utf8.h"

namespace gistmem::model {

std::string IncrementalDecoder::Push(int32_t id) {
  if (skip_special_ && tokenizer_->IsSpecial(id)) return {};
  pending_.append(tokenizer_->TokenBytes(id));
  const size_t ready = pending_.size() - utf8::IncompleteTailLength(pending_);
  std::string text;
  utf8::AppendLossy(std::string_view(pending_).substr(0, ready), text);
  pending_.erase(0, ready);
  return text;
}

std::string IncrementalDecoder::Flush() {
  std::string text;
  utf8::AppendLossy(pending_, text);
  pending_.clear();
  return text;
}

}  // namespace gistmem::model
