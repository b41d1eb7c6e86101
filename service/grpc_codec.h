// The service's methods are registered "raw" (grpc::ByteBuffer in and out) so that it parses
// requests itself: a request protobuf cannot parse (a string field with invalid UTF-8, say)
// becomes INVALID_ARGUMENT naming the message, where gRPC's own parsing would answer INTERNAL.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"

namespace gistmem::service {

// absl and gRPC share the canonical code numbers.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

template <typename Message>
absl::StatusOr<Message> ParseRequest(const grpc::ByteBuffer& buffer) {
  Message message;
  grpc::ByteBuffer copy(buffer);  // the reader consumes the buffer's slices
  grpc::ProtoBufferReader reader(&copy);
  if (!reader.status().ok() || !message.ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError("the request is not a valid " + message.GetTypeName() +
                                      " (its string fields must be valid UTF-8)");
  }
  return message;
}

grpc::ByteBuffer SerializeMessage(const google::protobuf::Message& message);

}  // namespace gistmem::service

namespace gistmem::service {

// What a turn that ended because its call was cancelled reports: DEADLINE_EXCEEDED when the
// call's deadline has passed, CANCELLED otherwise.
inline grpc::Status CancelledStatus(const grpc::CallbackServerContext& context) {
  if (context.deadline() <= std::chrono::system_clock::now()) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded during the turn");
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "the turn was cancelled");
}

}  // namespace gistmem::service
