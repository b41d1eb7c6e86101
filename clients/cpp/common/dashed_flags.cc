#include "clients/cpp/common/dashed_flags.h"

#include <algorithm>

namespace gistmem::clients {

DashedFlags::DashedFlags(int argc, char** argv) {
  bool flags_ended = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") flags_ended = true;
    if (!flags_ended && i > 0 && arg.size() > 2 && arg.starts_with("--")) {
      const size_t name_end = std::min(arg.find('='), arg.size());
      for (size_t c = 2; c < name_end; ++c) {
        if (arg[c] == '-') arg[c] = '_';
      }
    }
    args_.push_back(std::move(arg));
  }
  for (std::string& arg : args_)
    pointers_.push_back(arg.data());
  pointers_.push_back(nullptr);  // argv[argc] is NULL by convention
}

}  // namespace gistmem::clients
