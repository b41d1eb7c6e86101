#include "model/tokenizer/split_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cstdint>
#include <new>

#include "model/tokenizer/tokenizer_error.h"
#include "model/tokenizer/utf8.h"

namespace gistmem::model {
namespace {

constexpr std::string_view kWhiteSpaceRanges =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

std::shared_ptr<pcre2_real_code_8> Compile(std::string_view pattern, uint32_t options,
                                           std::string_view context) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options | PCRE2_UTF, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    std::array<PCRE2_UCHAR, 256> message{};
    pcre2_get_error_message(error_code, message.data(), message.size());
    throw TokenizerError(std::string(context) + ": regex does not compile at offset " +
                         std::to_string(error_offset) + ": " +
                         reinterpret_cast<const char*>(message.data()));
  }
  // JIT is an optimisation only: without it PCRE2 interprets the same pattern.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::shared_ptr<pcre2_real_code_8>(code, pcre2_code_free);
}

}  // namespace

std::string SpellOutWhiteSpaceClasses(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char escaped = pattern[++i];
      if (escaped == 's') {
        out +=
            in_class ? std::string(kWhiteSpaceRanges) : "[" + std::string(kWhiteSpaceRanges) + "]";
      } else if (escaped == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpaceRanges) + "]";
      } else {
        out += c;
        out += escaped;
      }
      continue;
    }
    out += c;
    if (!in_class && c == '[') {
      in_class = true;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
    } else if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      // POSIX class such as [:alpha:]: copy through its closing ":]".
      const size_t close = pattern.find(":]", i + 2);
      if (close != std::string_view::npos) {
        out.append(pattern.substr(i + 1, close + 2 - (i + 1)));
        i = close + 1;
      }
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

SplitRegex::SplitRegex(std::shared_ptr<pcre2_real_code_8> code)
    : code_(std::move(code)),
      match_context_(pcre2_match_context_create(nullptr), pcre2_match_context_free) {
  if (match_context_ == nullptr) throw std::bad_alloc();
  // The default limit (10 million steps) stops `\s*[\r\n]+` on a run of some ten megabytes of
  // spaces; these patterns backtrack at most linearly, so lift it.
  pcre2_set_match_limit(match_context_.get(), UINT32_MAX);
}

SplitRegex SplitRegex::FromPattern(std::string_view pattern, std::string_view context) {
  return SplitRegex(Compile(SpellOutWhiteSpaceClasses(pattern), PCRE2_UCP, context));
}

SplitRegex SplitRegex::FromLiteral(std::string_view literal, std::string_view context) {
  return SplitRegex(Compile(literal, PCRE2_LITERAL, context));
}

void SplitRegex::SplitIsolated(std::string_view text, std::vector<std::string_view>& pieces) const {
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match_data(
      pcre2_match_data_create_from_pattern(code_.get(), nullptr), pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t piece_start = 0;
  size_t search_from = 0;
  while (search_from <= text.size()) {
    // The text was validated once up front; re-checking it per match would be quadratic.
    const int rc = pcre2_match(code_.get(), subject, text.size(), search_from, PCRE2_NO_UTF_CHECK,
                               match_data.get(), match_context_.get());
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(rc, message.data(), message.size());
      throw TokenizerError(std::string("pre-tokenizer regex failed: ") +
                           reinterpret_cast<const char*>(message.data()));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const size_t match_start = ovector[0];
    const size_t match_end = ovector[1];
    if (match_start > piece_start)
      pieces.push_back(text.substr(piece_start, match_start - piece_start));
    if (match_end > match_start)
      pieces.push_back(text.substr(match_start, match_end - match_start));
    piece_start = match_end;
    if (match_end > match_start) {
      search_from = match_end;
    } else if (match_end < text.size()) {
      // An empty match splits the text but must not stop the search: step one character on.
      search_from = match_end + utf8::ReadSequence(text, match_end).length;
    } else {
      break;
    }
  }
  if (piece_start < text.size()) pieces.push_back(text.substr(piece_start));
}

}  // namespace gistmem::model
