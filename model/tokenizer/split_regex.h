#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct pcre2_real_code_8;
struct pcre2_real_match_context_8;

namespace gistmem::model {

// A compiled pre-tokenizer pattern (PCRE2, Unicode mode) that splits text the way Hugging
// Face's Split pre-tokenizer with behavior "Isolated" does. Immutable, safe to share between
// threads.
class SplitRegex {
 public:
  // `pattern` is in the Oniguruma syntax HF tokenizers uses; `context` (file and JSON key)
  // prefixes the error message when it does not compile.
  static SplitRegex FromPattern(std::string_view pattern, std::string_view context);
  // Matches `literal` verbatim (a Split pattern given as {"String": ...}).
  static SplitRegex FromLiteral(std::string_view literal, std::string_view context);

  // Appends every match in `text` and every non-empty stretch between matches, in order.
  // `text` must be valid UTF-8.
  void SplitIsolated(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  explicit SplitRegex(std::shared_ptr<pcre2_real_code_8> code);

  std::shared_ptr<pcre2_real_code_8> code_;
  // Read-only while matching, so threads share it.
  std::shared_ptr<pcre2_real_match_context_8> match_context_;
};

// Rewrites `\s` and `\S` into explicit White_Space classes: Oniguruma's `\s` is exactly
// Unicode White_Space, while PCRE2's also matches U+180E.
std::string SpellOutWhiteSpaceClasses(std::string_view pattern);

}  // namespace gistmem::model
