// Health while gistmem-server starts: before the model loads (seconds for a large one), a
// small gRPC server on the server's own address answers grpc.health.v1 NOT_SERVING (for ""
// and for gistmem.v1.Gistmem), so that probes see "starting" rather than "connection
// refused". The real server then binds the same port (gRPC sets SO_REUSEPORT) and this one
// is shut down.
//
//   std::unique_ptr<StartupHealth> starting = StartupHealth::Start(config.listen_address);
//   if (starting) config.listen_address = starting->address();   // port 0 -> the bound port
//   ... Server::Start(config) ...; starting.reset();
//
// Plaintext only: with TLS configured the caller does not start it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace gistmem::service {

class StartupHealth {
 public:
  // Nothing when the address cannot be bound (the real server then reports why).
  static std::unique_ptr<StartupHealth> Start(const std::string& listen_address);
  ~StartupHealth();
  StartupHealth(const StartupHealth&) = delete;
  StartupHealth& operator=(const StartupHealth&) = delete;

  // HOST:PORT with the port bound.
  const std::string& address() const { return address_; }

 private:
  StartupHealth() = default;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace gistmem::service
