#include "service/grpc_codec.h"

namespace gistmem::service {

grpc::ByteBuffer SerializeMessage(const google::protobuf::Message& message) {
  const std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace gistmem::service
