// Interactive mode: one turn per stdin line over a Chat stream, replies printed as they
// stream in, and a few slash commands (/new, /session ID, /stats, /help, /quit).
#pragma once

#include "clients/cpp/chat/gistmem_client.h"
#include "clients/cpp/chat/options.h"

namespace gistmem::chat {

// Returns the process exit code: 0 at /quit or end of input, an RPC error's code when the
// starting session cannot be created or found.
int RunInteractive(const ChatOptions& options, GistmemClient& client);

}  // namespace gistmem::chat
