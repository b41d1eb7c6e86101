#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace gistmem::model::utf8 {

// What starts at some byte offset of a byte string, following Unicode's table of well-formed
// UTF-8 byte sequences (no overlongs, no surrogates, nothing above U+10FFFF).
struct Sequence {
  enum class Kind {
    kValid,       // `length` bytes encode `code_point`
    kInvalid,     // `length` bytes (the maximal ill-formed subpart) stand for one U+FFFD
    kIncomplete,  // the text ends after `length` bytes that could still start a valid sequence
  };
  Kind kind;
  size_t length;
  char32_t code_point;
};

Sequence ReadSequence(std::string_view bytes, size_t offset);

// Byte offset of the first ill-formed sequence, or nullopt when `bytes` is valid UTF-8.
std::optional<size_t> FindInvalid(std::string_view bytes);

// Appends `bytes` to `out`, replacing each maximal ill-formed subpart with U+FFFD the way
// Rust's String::from_utf8_lossy (and so Hugging Face decoding) does.
void AppendLossy(std::string_view bytes, std::string& out);

// Length of the trailing bytes that are the start of a character still missing bytes.
size_t IncompleteTailLength(std::string_view bytes);

void AppendCodePoint(char32_t code_point, std::string& out);

}  // namespace gistmem::model::utf8
