// Tokenizer input (model/tokenizer/tokenizer.h) with the shipped model's tokenizer.json:
//
//   first byte even: the rest is text. Encode refuses it exactly when it is not valid UTF-8;
//     otherwise every id is in the vocabulary, Decode gives the text back byte for byte (a
//     byte-level BPE with no normalizer loses nothing), and IncrementalDecoder, fed the ids
//     one by one, gives the same text as Decode.
//   first byte odd: the rest is little-endian int32 ids, any values. Decode (with and without
//     skip_special) gives valid UTF-8, IncrementalDecoder agrees with it, and the id queries
//     answer for every id.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "model/tokenizer/incremental_decoder.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using gistmem::fuzz::Fail;
using gistmem::fuzz::IsValidUtf8;
using gistmem::model::IncrementalDecoder;
using gistmem::model::Tokenizer;

std::string Incremental(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                        bool skip_special) {
  IncrementalDecoder decoder(tokenizer, skip_special);
  std::string text;
  for (int32_t id : ids) {
    const std::string piece = decoder.Push(id);
    if (!IsValidUtf8(piece)) Fail("IncrementalDecoder::Push gave invalid UTF-8");
    text += piece;
  }
  text += decoder.Flush();
  return text;
}

void Text(const Tokenizer& tokenizer, std::string_view text) {
  std::vector<int32_t> ids;
  try {
    ids = tokenizer.Encode(text);
  } catch (const gistmem::model::TokenizerError&) {
    if (IsValidUtf8(text)) Fail("Encode refused valid UTF-8");
    return;
  }
  if (!IsValidUtf8(text)) Fail("Encode accepted invalid UTF-8");
  for (int32_t id : ids) {
    if (id < 0 || id >= tokenizer.vocab_size()) Fail("Encode gave an id outside the vocabulary");
  }
  const std::string decoded = tokenizer.Decode(ids);
  if (decoded != text) Fail("Decode(Encode(text)) != text");
  if (Incremental(tokenizer, ids, false) != decoded) Fail("IncrementalDecoder != Decode");
}

void Ids(const Tokenizer& tokenizer, const uint8_t* data, size_t size) {
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  for (bool skip_special : {false, true}) {
    const std::string decoded = tokenizer.Decode(ids, skip_special);
    if (!IsValidUtf8(decoded)) Fail("Decode gave invalid UTF-8");
    if (Incremental(tokenizer, ids, skip_special) != decoded) Fail("IncrementalDecoder != Decode");
  }
  for (int32_t id : ids) {
    const std::string_view text = tokenizer.TokenText(id);
    const std::string_view bytes = tokenizer.TokenBytes(id);
    const bool known = id >= 0 && id < tokenizer.vocab_size() && !text.empty();
    if (known && tokenizer.TokenId(text) != id && !tokenizer.IsAddedToken(id)) {
      Fail("TokenId(TokenText(id)) != id");
    }
    if (!known && !bytes.empty() && (id < 0 || id >= tokenizer.vocab_size())) {
      Fail("bytes for an id outside the vocabulary");
    }
    (void)tokenizer.IsSpecial(id);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Tokenizer& tokenizer = gistmem::fuzz::Tokenizer();
  if (data[0] % 2 == 0) {
    Text(tokenizer, std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  } else {
    Ids(tokenizer, data + 1, size - 1);
  }
  return 0;
}
