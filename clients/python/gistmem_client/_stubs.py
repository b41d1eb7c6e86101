"""The generated protobuf and gRPC modules (made by generate_stubs.sh, not committed)."""

try:
    from gistmem_client._generated.gistmem.v1 import gistmem_pb2 as pb
    from gistmem_client._generated.gistmem.v1 import gistmem_pb2_grpc as pb_grpc
except ImportError as error:  # pragma: no cover - depends on the checkout's state
    raise ImportError(
        "gistmem_client's gRPC stubs are missing: run clients/python/generate_stubs.sh "
        "(or install the package, which runs it)") from error

# grpcio-health-checking, when installed, has already registered grpc.health.v1 in the
# protobuf pool; registering our copy too would clash, so use its modules then.
try:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
except ImportError:
    from gistmem_client._generated.grpc.health.v1 import health_pb2, health_pb2_grpc

__all__ = ["pb", "pb_grpc", "health_pb2", "health_pb2_grpc"]
