#pragma once

#include <functional>
#include <string_view>

namespace gistmem::model {

// Lets unordered maps keyed by std::string be searched with a std::string_view, without
// building a temporary string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const { return std::hash<std::string_view>()(text); }
};

}  // namespace gistmem::model
