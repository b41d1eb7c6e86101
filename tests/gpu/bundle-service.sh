#!/usr/bin/env bash
# Packs what tests/gpu/run-service.sh runs on the GPU machine: gistmem-server, gistmem-chat,
# gistmem-cli, the service integration tests (tests/integration/service_*_test), the Python
# client's generated gRPC stubs, and every Debian shared library those binaries load (not libc,
# libstdc++, libgcc_s, libcuda or cuBLAS/cuBLASLt: the GPU machine has them; run-service.sh
# finds its cuBLASLt). Stripped; one tar.xz with a large LZMA window, so that the copies of
# the service and CUDA code in every test binary compress to almost nothing.
#
#   tests/gpu/bundle-service.sh BUILD_DIR OUT_DIR
#     BUILD_DIR  a build tree made with nvcc (GISTMEM_CUDA AUTO or ON), every target built
#     OUT_DIR    gets bundle-service.tar.xz; a git-ignored folder of the checkout that is
#                carried to the GPU machine, e.g. .gpu/service
#   SPLIT_MB=N   also cuts the bundle into parts of at most N MB, OUT_DIR/part-K/ (K = 0, 1,
#                ...), for when the checkout plus the bundle pass a call's carry limit: carry
#                one part a call, back to back (the machine keeps /tmp while it is held), each
#                call starting with `bash tests/gpu/stage-part.sh .gpu/service/part-K`; the
#                last part's call then runs `bash tests/gpu/run-service.sh`.
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,17p' "$0"; exit 2; }
build=$(cd "$1" && pwd) out=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[[ -f $build/model/backend/cuda/libgistmem_cuda.a ]] ||
  { echo "$build has no CUDA backend (configure with nvcc present)" >&2; exit 1; }
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/tests" "$out"

bins=()
for name in gistmem-server gistmem-chat gistmem-cli; do
  path=$(find "$build" -type f -perm -u+x -name "$name" ! -path '*/CMakeFiles/*' | head -1)
  [[ -n $path ]] || { echo "no $name under $build (build it first)" >&2; exit 1; }
  bins+=("$path")
  strip -o "$stage/bin/$name" "$path"
done
mapfile -t tests < <(find "$build/tests/integration" -maxdepth 1 -type f -perm -u+x \
  -name 'service_*_test' | sort)
((${#tests[@]})) || { echo "no service_*_test under $build/tests/integration" >&2; exit 1; }
for t in "${tests[@]}"; do strip -o "$stage/tests/$(basename "$t")" "$t"; done
bins+=("${tests[@]}")

skip='ld-linux|/libc\.so|/libm\.so|libstdc\+\+|libgcc_s|libpthread|/libdl\.so|/librt\.so|libcuda\.so|libcublas'
for b in "${bins[@]}"; do ldd "$b" | awk '/=>/ {print $3}'; done | sort -u | grep -vE "$skip" |
  while read -r lib; do [[ -f $lib ]] && cp -L "$lib" "$stage/lib/$(basename "$lib")"; done

# The Python client's stubs (git-ignored, generated here with Debian's protoc 3.21 and
# grpc_python_plugin; plain protobuf/grpcio code that newer runtimes import).
"$root/clients/python/generate_stubs.sh"
cp -r "$root/clients/python/gistmem_client/_generated" "$stage/python_generated"

(cd "$stage" && find . -type f | sort >MANIFEST)
# Binaries first, then libraries: similar files sit next to each other in the LZMA window.
tar -C "$stage" -cf - MANIFEST bin tests lib python_generated |
  xz --lzma2=preset=${XZ_PRESET:-6},dict=256MiB -T1 >"$out/bundle-service.tar.xz"
echo "$out/bundle-service.tar.xz: $(du -h "$out/bundle-service.tar.xz" | cut -f1)," \
  "${#bins[@]} binaries, $(ls "$stage/lib" | wc -l) libraries"
if [[ -n ${SPLIT_MB:-} ]]; then
  rm -rf "$out"/part-*
  split -b "${SPLIT_MB}M" -d -a 2 "$out/bundle-service.tar.xz" "$out/bundle-service.tar.xz.part-"
  parts=("$out"/bundle-service.tar.xz.part-*)
  sum=$(sha256sum <"$out/bundle-service.tar.xz" | cut -d' ' -f1)
  for k in "${!parts[@]}"; do
    mkdir -p "$out/part-$k"
    mv "${parts[$k]}" "$out/part-$k/"
    printf '%s %s\n' "${#parts[@]}" "$sum" >"$out/part-$k/PARTS"
  done
  echo "split into ${#parts[@]} parts: $out/part-0 .. part-$((${#parts[@]} - 1))"
fi
