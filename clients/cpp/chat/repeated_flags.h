// absl flags keep only the last value of a flag given twice, but gistmem-chat's turns
// (--message) and appended context (--append) are repeatable and their order matters. This
// takes them out of argv, in order, before absl parses the rest.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace gistmem::chat {

struct RepeatedFlag {
  std::string name;  // without dashes, e.g. "message"
  std::string value;
};

struct SplitArgs {
  std::vector<char*> rest;             // argv without the repeated flags, for absl
  std::vector<RepeatedFlag> repeated;  // in command-line order
  std::string error;                   // non-empty when a repeated flag had no value
};

// Accepts --name=value, --name value, -name=value and -name value; stops at "--".
SplitArgs ExtractRepeatedFlags(int argc, char** argv, const std::set<std::string>& names);

}  // namespace gistmem::chat
