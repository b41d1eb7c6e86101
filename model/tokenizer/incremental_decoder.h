#pragma once

#include <cstdint>
#include <string>

#include "model/tokenizer/tokenizer.h"

namespace gistmem::model {

// Turns generated ids into text as they arrive, never splitting a UTF-8 character: the
// concatenation of every Push and the final Flush equals Tokenizer::Decode of all the ids.
// Not thread-safe (one per stream); the tokenizer must outlive it.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(&tokenizer), skip_special_(skip_special) {}

  // The complete text that `id` finishes. Bytes that can no longer become valid UTF-8 come
  // out as U+FFFD right away; the start of a character still missing bytes is held back.
  std::string Push(int32_t id);

  // Whatever is held back, unfinished characters as U+FFFD; the decoder is then empty.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace gistmem::model
