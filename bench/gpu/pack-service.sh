#!/usr/bin/env bash
# Packs what the service rows of bench/gpu/run.sh (PARTS svc-*) run on the GPU machine:
# gistmem-server (stripped), the shared libraries it loads that the GPU machine lacks (not libc,
# libstdc++, libgcc_s, libcuda or cuBLAS/cuBLASLt: run.sh takes cuBLASLt from the machine's
# CUDA 13), the Python client's generated gRPC stubs (the clients are bench/gpu/service_bench.py
# and bench/load/load.py, which travel with the checkout) and the commit it was built from.
#
#   bench/gpu/pack-service.sh BUILD_DIR OUT_DIR     -> OUT_DIR/service-bundle.tar.xz
#     BUILD_DIR  a build tree made with nvcc (the CUDA backend) and without librados
#                (-DRADOS_LIBRARY=OFF -DRADOS_INCLUDE_DIR=OFF), gistmem-server built
#     OUT_DIR    a git-ignored folder of the checkout that the call carries, e.g. .gpu/svc
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,10p' "$0"; exit 2; }
build=$(cd "$1" && pwd) out=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$build/service/gistmem-server
[[ -x $bin ]] || { echo "no $bin: cmake --build $1 --target gistmem-server" >&2; exit 1; }
[[ -f $build/model/backend/cuda/libgistmem_cuda.a ]] ||
  { echo "$1 has no CUDA backend (configure with nvcc present): the server could not serve --device cuda" >&2; exit 1; }
# librados and libceph-common would add ~4 MB packed; the benchmark uses the RocksDB store.
! ldd "$bin" | grep -q librados ||
  { echo "$bin links librados: configure $1 with -DRADOS_LIBRARY=OFF -DRADOS_INCLUDE_DIR=OFF" >&2; exit 1; }
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$out"
strip -o "$stage/bin/gistmem-server" "$bin"
skip='ld-linux|/libc\.so|/libm\.so|libstdc\+\+|libgcc_s|libpthread|/libdl\.so|/librt\.so|libcuda\.so|libcublas'
# Two libraries are replaced by shims of bench/gpu/shims (the call's carry limit: checkout plus
# bundle <= 64 MiB): OpenBLAS (36 MB; only the CPU engine calls it) and ICU's data (31 MB; the
# tokenizer's character classes are compiled into libicuuc). The libraries only they load go too.
shimmed='libopenblas\.so|libgfortran|libquadmath|libicudata'
ldd "$bin" | awk '/=>/ {print $3}' | sort -u | grep -vE "$skip|$shimmed" |
  while read -r lib; do [[ -f $lib ]] && cp -L "$lib" "$stage/lib/"; done
shims=$root/bench/gpu/shims
gcc -shared -fPIC -O2 -Wl,-soname,libopenblas.so.0 -o "$stage/lib/libopenblas.so.0" "$shims/cblas_sgemm.c"
gcc -shared -fPIC -O2 -Wl,-soname,libicudata.so.72 -o "$stage/lib/libicudata.so.72" "$shims/icudata_stub.c"
strip "$stage/lib/libopenblas.so.0" "$stage/lib/libicudata.so.72"
# Every library the server needs must resolve inside the bundle (or be one the machine has).
missing=$(LD_LIBRARY_PATH=$stage/lib ldd "$stage/bin/gistmem-server" | grep "not found" | grep -vE "libcuda|libcublas" || true)
[[ -z $missing ]] || { echo "unresolved in the bundle: $missing" >&2; exit 1; }
# Stubs made here (Debian's protoc 3.21): plain protobuf/grpcio code that newer runtimes import.
"$root/clients/python/generate_stubs.sh" >/dev/null
cp -r "$root/clients/python/gistmem_client/_generated" "$stage/python_generated"
rm -rf "$stage/python_generated/__pycache__"
{ git -C "$root" rev-parse HEAD; git -C "$root" status --porcelain --untracked-files=no | head -20; } \
  >"$stage/COMMIT" 2>/dev/null || true
tar -C "$stage" -cf - COMMIT bin lib python_generated |
  xz --lzma2=preset=${XZ_PRESET:-6},dict=64MiB -T1 >"$out/service-bundle.tar.xz"
echo "$out/service-bundle.tar.xz: $(du -h "$out/service-bundle.tar.xz" | cut -f1)" \
  "($(stat -c %s "$out/service-bundle.tar.xz") bytes), $(ls "$stage/lib" | wc -l) libraries," \
  "commit $(head -1 "$stage/COMMIT")"
