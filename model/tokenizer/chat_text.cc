#include "model/tokenizer/chat_text.h"

#include "model/tokenizer/utf8.h"

namespace gistmem::model::chat_text {
namespace {

// Python's str.isspace(): bidirectional classes WS, B, S, plus space separators.
bool IsPythonWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

}  // namespace

std::string_view PythonStrip(std::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    const utf8::Sequence sequence = utf8::ReadSequence(text, begin);
    if (sequence.kind != utf8::Sequence::Kind::kValid || !IsPythonWhitespace(sequence.code_point)) {
      break;
    }
    begin += sequence.length;
  }
  size_t end = text.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80)
      --start;
    const utf8::Sequence sequence = utf8::ReadSequence(text.substr(0, end), start);
    if (sequence.kind != utf8::Sequence::Kind::kValid || !IsPythonWhitespace(sequence.code_point)) {
      break;
    }
    end = start;
  }
  return text.substr(begin, end - begin);
}

std::string_view LeftStrip(std::string_view text, char c) {
  const size_t begin = text.find_first_not_of(c);
  return begin == std::string_view::npos ? std::string_view() : text.substr(begin);
}

std::string_view RightStrip(std::string_view text, char c) {
  const size_t last = text.find_last_not_of(c);
  return last == std::string_view::npos ? std::string_view() : text.substr(0, last + 1);
}

std::string_view Strip(std::string_view text, char c) {
  return RightStrip(LeftStrip(text, c), c);
}

std::string_view BeforeFirst(std::string_view text, std::string_view separator) {
  const size_t found = text.find(separator);
  return found == std::string_view::npos ? text : text.substr(0, found);
}

std::string_view AfterLast(std::string_view text, std::string_view separator) {
  const size_t found = text.rfind(separator);
  return found == std::string_view::npos ? text : text.substr(found + separator.size());
}

}  // namespace gistmem::model::chat_text
