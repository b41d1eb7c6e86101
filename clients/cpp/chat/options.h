// gistmem-chat's command line, parsed and checked into one struct.
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "gistmem/v1/gistmem.pb.h"

namespace gistmem::chat {

// Bad flags: main prints the message and exits with kExitUsage.
class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

enum class Mode {
  kInteractive,  // turns from stdin lines until /quit or end of input
  kScripted,     // the --append/--message actions, then --stats; for tests and tools
  kHealth,       // grpc.health.v1 Check
};

// One step of a scripted run, in command-line order.
struct Action {
  enum class Kind { kMessage, kAppend };
  Kind kind;
  std::string text;
};

struct ChatOptions {
  Mode mode = Mode::kInteractive;
  std::string server;
  bool create_session = false;      // --new
  std::string session_id;           // --session; with --new, the id to create it under
  v1::CreateSessionRequest create;  // --system, --policy...; used with --new
  v1::SamplingParams sampling;      // per-turn overrides; unset fields keep session defaults
  std::vector<Action> actions;
  std::string append_role;
  bool json = false;
  bool stats = false;
  std::string health_service;
  std::chrono::milliseconds deadline{0};  // per RPC; 0 = none
  std::string api_key;                    // --api_key, or $GISTMEM_API_KEY
  std::string tls_ca_pem;                 // the contents of --tls_ca
};

// Parses argv (absl flags plus the ordered, repeatable --message/--append); throws UsageError.
// --help and friends are handled here too (absl prints and exits).
ChatOptions ParseOptions(int argc, char** argv);

}  // namespace gistmem::chat
