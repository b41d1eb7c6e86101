#!/usr/bin/env bash
# Generates the gRPC Python stubs of gistmem.v1 and grpc.health.v1 into
# gistmem_client/_generated/ (git-ignored; run at build and test time, never committed).
# Uses protoc with grpc_python_plugin when both are installed (Debian 12: protobuf-compiler,
# protobuf-compiler-grpc), because Debian's python3-grpc-tools 1.14 bundles protoc 3.5, which
# rejects proto3 `optional`; otherwise `$PYTHON -m grpc_tools.protoc` (a pip grpcio-tools).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-/usr/bin/python3}
out=$here/gistmem_client/_generated
health_protos=$root/clients/cpp/chat/proto

# Generate into a scratch directory and move it in whole, so that concurrent runs (parallel
# tests) never import a half-written package.
scratch=$(mktemp -d "$here/gistmem_client/.generated.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
if command -v protoc >/dev/null && command -v grpc_python_plugin >/dev/null; then
  protoc=(protoc "--plugin=protoc-gen-grpc_python=$(command -v grpc_python_plugin)")
else
  protoc=("$python" -m grpc_tools.protoc)
fi
"${protoc[@]}" --proto_path="$root/proto" --proto_path="$health_protos" \
  --python_out="$scratch" --grpc_python_out="$scratch" \
  gistmem/v1/gistmem.proto grpc/health/v1/health.proto

# protoc writes absolute imports ("from gistmem.v1 import ..."); inside this package they
# must name it, and the generated "grpc" folder must not shadow the real grpc module.
find "$scratch" -name '*_pb2*.py' -exec sed -i -E \
  -e 's/^from (gistmem|grpc\.health)\.v1 import/from gistmem_client._generated.\1.v1 import/' {} +
for dir in "$scratch" "$scratch/gistmem" "$scratch/gistmem/v1" "$scratch/grpc" \
  "$scratch/grpc/health" "$scratch/grpc/health/v1"; do
  touch "$dir/__init__.py"
done

rm -rf "$out.old"
if [[ -d $out ]]; then mv "$out" "$out.old"; fi
mv "$scratch" "$out"
rm -rf "$out.old"
