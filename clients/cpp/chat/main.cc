// gistmem-chat: chat with a gistmem server, interactively or scripted (--help for both).
#include <cstdio>

#include "clients/cpp/chat/exit_codes.h"
#include "clients/cpp/chat/gistmem_client.h"
#include "clients/cpp/chat/interactive_loop.h"
#include "clients/cpp/chat/options.h"
#include "clients/cpp/chat/scripted_run.h"
#include "clients/cpp/common/dashed_flags.h"

int main(int argc, char** argv) {
  using namespace gistmem::chat;
  ChatOptions options;
  try {
    gistmem::clients::DashedFlags flags(argc, argv);
    options = ParseOptions(flags.argc(), flags.argv());
  } catch (const UsageError& e) {
    std::fprintf(stderr, "gistmem-chat: %s (--help for usage)\n", e.what());
    return kExitUsage;
  }
  GistmemClient client({.address = options.server,
                        .deadline = options.deadline,
                        .api_key = options.api_key,
                        .tls_ca_pem = options.tls_ca_pem});
  switch (options.mode) {
    case Mode::kHealth:
      return RunHealthCheck(options, client);
    case Mode::kScripted:
      return RunScripted(options, client);
    case Mode::kInteractive:
      return RunInteractive(options, client);
  }
  return kExitUsage;
}
