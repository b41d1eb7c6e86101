#include "clients/cpp/chat/repeated_flags.h"

#include <string_view>

namespace gistmem::chat {
namespace {

// The flag name of an argument like "--name=value" or "-name", or "" for a non-flag.
std::string_view FlagName(std::string_view arg) {
  if (arg.size() < 2 || arg[0] != '-') return {};
  arg.remove_prefix(arg[1] == '-' ? 2 : 1);
  return arg.substr(0, arg.find('='));
}

}  // namespace

SplitArgs ExtractRepeatedFlags(int argc, char** argv, const std::set<std::string>& names) {
  SplitArgs split;
  if (argc > 0) split.rest.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") {
      for (; i < argc; ++i)
        split.rest.push_back(argv[i]);
      break;
    }
    const std::string name(FlagName(arg));
    if (name.empty() || !names.contains(name)) {
      split.rest.push_back(argv[i]);
      continue;
    }
    if (const size_t equals = arg.find('='); equals != std::string_view::npos) {
      split.repeated.push_back({name, std::string(arg.substr(equals + 1))});
    } else if (i + 1 < argc) {
      split.repeated.push_back({name, argv[++i]});
    } else {
      split.error = "--" + name + " needs a value";
      break;
    }
  }
  return split;
}

}  // namespace gistmem::chat
