#pragma once

#include <string>
#include <string_view>

namespace gistmem::model::unicode {

// Unicode White_Space (Rust's char::is_whitespace, the `\s` of Rust's regex crate).
bool IsWhiteSpace(char32_t code_point);

// The `\w` of Rust's regex crate: Alphabetic, marks, decimal digits, connector punctuation
// and join controls.
bool IsWordCharacter(char32_t code_point);

// First and last code point of valid, non-empty UTF-8.
char32_t FirstCodePoint(std::string_view text);
char32_t LastCodePoint(std::string_view text);

// Byte length of the longest prefix / suffix made of White_Space characters.
size_t LeadingWhiteSpaceLength(std::string_view text);
size_t TrailingWhiteSpaceLength(std::string_view text);

// Unicode Normalization Form C of valid UTF-8: `text` itself when it is already in NFC,
// otherwise the normalized text, kept in `storage`.
std::string_view NormalizeNfc(std::string_view text, std::string& storage);

}  // namespace gistmem::model::unicode
