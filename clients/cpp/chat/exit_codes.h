// gistmem-chat's exit codes: scripts tell a missing session from a dead server by the code.
#pragma once

#include <grpcpp/support/status.h>

#include <string_view>

namespace gistmem::chat {

inline constexpr int kExitOk = 0;
inline constexpr int kExitNotServing = 1;     // --health answered, but not SERVING
inline constexpr int kExitUsage = 2;          // bad flags
inline constexpr int kExitRpcErrorBase = 10;  // + the gRPC status code (NOT_FOUND = 5 -> 15)

// "NOT_FOUND", "UNAVAILABLE", ...: the names gRPC's documentation uses.
std::string_view StatusCodeName(grpc::StatusCode code);

// Prints "CODE_NAME: message" on stderr and returns the exit code for the status.
int ReportRpcError(const grpc::Status& status);

}  // namespace gistmem::chat
