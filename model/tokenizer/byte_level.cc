#include "model/tokenizer/byte_level.h"

#include "model/tokenizer/utf8.h"

namespace gistmem::model {
namespace {

bool StandsForItself(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
         (byte >= 0xAE && byte <= 0xFF);
}

}  // namespace

const ByteLevelAlphabet& ByteLevelAlphabet::Get() {
  static const ByteLevelAlphabet alphabet;
  return alphabet;
}

ByteLevelAlphabet::ByteLevelAlphabet() {
  bytes_.fill(-1);
  char32_t next_extra = 0x100;
  for (int byte = 0; byte < 256; ++byte) {
    const char32_t code_point = StandsForItself(byte) ? static_cast<char32_t>(byte) : next_extra++;
    utf8::AppendCodePoint(code_point, chars_[byte]);
    bytes_[code_point] = static_cast<int16_t>(byte);
  }
}

void ByteLevelAlphabet::Encode(std::string_view bytes, std::string& out) const {
  for (char c : bytes)
    out.append(chars_[static_cast<uint8_t>(c)]);
}

bool ByteLevelAlphabet::Decode(std::string_view token, std::string& out) const {
  const size_t original_size = out.size();
  size_t offset = 0;
  while (offset < token.size()) {
    const utf8::Sequence sequence = utf8::ReadSequence(token, offset);
    if (sequence.kind != utf8::Sequence::Kind::kValid || sequence.code_point >= bytes_.size() ||
        bytes_[sequence.code_point] < 0) {
      out.resize(original_size);
      return false;
    }
    out.push_back(static_cast<char>(bytes_[sequence.code_point]));
    offset += sequence.length;
  }
  return true;
}

}  // namespace gistmem::model
