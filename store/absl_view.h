// Debian's abseil is built with its own absl::string_view (not an alias of std::string_view),
// and absl::StrCat and the escaping functions take only that; this bridges the two.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace gistmem::store {

inline absl::string_view AbslView(std::string_view view) {
  return absl::string_view(view.data(), view.size());
}

}  // namespace gistmem::store
