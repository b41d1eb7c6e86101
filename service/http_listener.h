// Binds a cpp-httplib server to "HOST:PORT" (port 0: the kernel picks one; IPv6 hosts in
// brackets) and serves it on a thread of its own.
#pragma once

#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace gistmem::service {

// The port bound; INVALID_ARGUMENT for an address that is not HOST:PORT, UNAVAILABLE when it
// cannot be bound. `flag` names the address in errors. On success `*listener` runs the server
// until server.stop(); join it then.
absl::StatusOr<int> BindAndServe(httplib::Server& server, const std::string& address,
                                 const std::string& flag, std::thread* listener);

}  // namespace gistmem::service
