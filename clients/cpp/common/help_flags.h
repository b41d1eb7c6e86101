// `--help` lists a program's own flags. Abseil's default lists only flags defined in a file
// named like the program (or main.cc), so a binary whose flags live elsewhere printed "No
// flags matched" and only --helpfull showed them. Call before absl::ParseCommandLine:
//
//   gistmem::clients::HelpListsFlagsFrom("bench/");   // flags defined under bench/
#pragma once

#include <string>

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace gistmem::clients {

// --help (and --helpshort) list the flags defined in source files whose path contains
// `folder`; --helpfull still lists every flag.
inline void HelpListsFlagsFrom(std::string folder) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [folder](absl::string_view file) {
    return absl::StrContains(file, folder);
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
}

}  // namespace gistmem::clients
