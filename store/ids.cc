#include "store/ids.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "store/absl_view.h"

namespace gistmem::store {
namespace {
bool IsIdChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}
}  // namespace

bool IsValidId(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes) return false;
  bool only_dots = true;
  for (char c : id) {
    if (!IsIdChar(c)) return false;
    only_dots = only_dots && c == '.';
  }
  // ".", "..": path-like names that tools and logs would misread.
  return !only_dots;
}

absl::Status ValidateId(std::string_view what, std::string_view id) {
  if (IsValidId(id)) return absl::OkStatus();
  // Bounded so that a huge id does not make a huge message.
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid ", AbslView(what), " \"", absl::CHexEscape(AbslView(id.substr(0, kMaxIdBytes + 1))),
      "\": use 1 to ", kMaxIdBytes, " bytes of [A-Za-z0-9_.-], not only dots"));
}

}  // namespace gistmem::store
