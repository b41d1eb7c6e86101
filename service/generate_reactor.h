// Generate: one turn on a server stream (TurnStart, TokenDeltas, TurnEnd).
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/statusor.h"
#include "service/event_writer.h"
#include "service/turn_executor.h"

namespace gistmem::service {

class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // Parses the request and submits the turn for `tenant` (or finishes with the status that
  // refused the caller); deletes itself when the call is done.
  GenerateReactor(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                  absl::StatusOr<std::string> tenant, TurnExecutor& turns);

  void OnWriteDone(bool ok) override { writer_.OnWriteDone(ok); }
  // Cancellation needs no reaction: the turn polls context->IsCancelled() between tokens.
  void OnCancel() override {}
  void OnDone() override { delete this; }

 private:
  class Observer;

  grpc::CallbackServerContext* context_;
  EventWriter<GenerateReactor> writer_;
};

}  // namespace gistmem::service
