// Scripted mode: create or pick a session, run --append/--message in order, then --stats.
#pragma once

#include "clients/cpp/chat/gistmem_client.h"
#include "clients/cpp/chat/options.h"

namespace gistmem::chat {

// Returns the process exit code (see exit_codes.h).
int RunScripted(const ChatOptions& options, GistmemClient& client);

// --health: exit 0 when the server answers SERVING.
int RunHealthCheck(const ChatOptions& options, GistmemClient& client);

}  // namespace gistmem::chat
