// Lets users spell flags with dashes (--max-tokens) as well as abseil's underscores
// (--max_tokens): the issue tracker, scripts and habit use both.
#pragma once

#include <string>
#include <vector>

namespace gistmem::clients {

// Returns argv with every "--some-name[=value]" rewritten to "--some_name[=value]"; values,
// positional arguments and everything after a bare "--" are left alone. The returned strings
// own the storage that argv() hands to absl::ParseCommandLine.
class DashedFlags {
 public:
  DashedFlags(int argc, char** argv);
  int argc() const { return static_cast<int>(pointers_.size()) - 1; }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> args_;
  std::vector<char*> pointers_;
};

}  // namespace gistmem::clients
