"""GistmemError: every failed call, with the gRPC status code the server (or channel) gave."""

import contextlib

import grpc


class GistmemError(Exception):
    """A gRPC call failed. `code` is a grpc.StatusCode, e.g. grpc.StatusCode.NOT_FOUND."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "GistmemError":
        # Errors raised by calls are also grpc.Call objects; others carry no status.
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "")


@contextlib.contextmanager
def rpc_errors():
    """Turns grpc.RpcError raised inside the block into GistmemError."""
    try:
        yield
    except grpc.RpcError as error:
        raise GistmemError.from_rpc_error(error) from error
