#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace gistmem::model {

// GPT-2's reversible byte <-> Unicode mapping used by byte-level BPE vocabularies: printable
// bytes stand for themselves, the others for code points from U+0100 on.
class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& Get();

  // UTF-8 of the character that stands for `byte`.
  std::string_view CharFor(uint8_t byte) const { return chars_[byte]; }

  // Appends the byte-level spelling of `bytes` to `out`.
  void Encode(std::string_view bytes, std::string& out) const;

  // Appends the bytes that `token` spells, when every character of it is in the alphabet;
  // returns false (leaving `out` alone) otherwise.
  bool Decode(std::string_view token, std::string& out) const;

 private:
  ByteLevelAlphabet();

  std::array<std::string, 256> chars_;
  // Index: code point (all of them are below U+0144); value: byte, or -1 if not in the alphabet.
  std::array<int16_t, 0x144> bytes_;
};

}  // namespace gistmem::model
