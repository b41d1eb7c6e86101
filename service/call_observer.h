// Observes every gRPC call of the server (a gRPC server interceptor): when the call finishes
// it counts it in gistmem_grpc_requests_total{method, code} (and _errors_total, the
// duration histogram) and logs one "call" event with method, code, duration, tenant, session
// id (from the first request message), request id (the caller's "x-request-id" metadata, or
// a fresh one) and, on error, the status message.
//
//   builder.experimental().SetInterceptorCreators(CallObservers(auth));
//
// The interceptor never changes a call. `auth` must outlive the server.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <vector>

#include "service/auth.h"

namespace gistmem::service {

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> CallObservers(
    const Auth& auth);

// A fresh request id: 16 random hex digits.
std::string NewRequestId();

}  // namespace gistmem::service
