#include "model/tokenizer/unicode_text.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include <string>

#include "model/tokenizer/tokenizer_error.h"
#include "model/tokenizer/utf8.h"

namespace gistmem::model::unicode {
namespace {

bool IsContinuationByte(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

size_t LastCodePointStart(std::string_view text) {
  size_t start = text.size() - 1;
  while (start > 0 && IsContinuationByte(text[start]))
    --start;
  return start;
}

}  // namespace

bool IsWhiteSpace(char32_t code_point) {
  return u_isUWhiteSpace(static_cast<UChar32>(code_point));
}

bool IsWordCharacter(char32_t code_point) {
  const auto c = static_cast<UChar32>(code_point);
  if (u_isUAlphabetic(c) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) return true;
  switch (u_charType(c)) {
    case U_NON_SPACING_MARK:
    case U_COMBINING_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_CONNECTOR_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

char32_t FirstCodePoint(std::string_view text) {
  return utf8::ReadSequence(text, 0).code_point;
}

char32_t LastCodePoint(std::string_view text) {
  return utf8::ReadSequence(text, LastCodePointStart(text)).code_point;
}

size_t LeadingWhiteSpaceLength(std::string_view text) {
  size_t offset = 0;
  while (offset < text.size()) {
    const utf8::Sequence sequence = utf8::ReadSequence(text, offset);
    if (sequence.kind != utf8::Sequence::Kind::kValid || !IsWhiteSpace(sequence.code_point)) break;
    offset += sequence.length;
  }
  return offset;
}

size_t TrailingWhiteSpaceLength(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    const size_t start = LastCodePointStart(text.substr(0, end));
    if (!IsWhiteSpace(utf8::ReadSequence(text, start).code_point)) break;
    end = start;
  }
  return text.size() - end;
}

std::string_view NormalizeNfc(std::string_view text, std::string& storage) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) {
    throw TokenizerError(std::string("ICU NFC normalizer unavailable: ") + u_errorName(status));
  }
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  // Most text is already in NFC; the quick check avoids copying it through ICU.
  if (nfc->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return text;
  status = U_ZERO_ERROR;
  storage.clear();
  icu::StringByteSink<std::string> sink(&storage, static_cast<int32_t>(text.size()));
  nfc->normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) {
    throw TokenizerError(std::string("NFC normalization failed: ") + u_errorName(status));
  }
  return storage;
}

}  // namespace gistmem::model::unicode
