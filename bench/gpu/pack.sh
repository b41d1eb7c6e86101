#!/usr/bin/env bash
# Packs gistmem-gpu-bench for the GPU machine (as tests/gpu/bundle.sh packs the GPU tests): the
# stripped binary, the shared libraries it loads that the GPU machine lacks (not cuBLAS/cuBLASLt:
# bench/gpu/run.sh takes them from the machine's CUDA 13), and the commit it was built from.
#   bench/gpu/pack.sh BUILD_DIR OUT_DIR      -> OUT_DIR/bench-bundle.tar.xz
set -eu
build=$1 out=$2
bin=$build/bench/gpu/gistmem-gpu-bench
[ -x "$bin" ] || { echo "no $bin: cmake --build $build --target gistmem-gpu-bench" >&2; exit 1; }
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$out"
strip -o "$stage/bin/gistmem-gpu-bench" "$bin"
skip='ld-linux|/libc\.so|/libm\.so|libstdc\+\+|libgcc_s|libpthread|/libdl\.so|/librt\.so|libcuda\.so|libcublas'
ldd "$bin" | awk '/=>/ {print $3}' | sort -u | grep -vE "$skip" |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
{ git rev-parse HEAD; git status --porcelain --untracked-files=no | head -20; } > "$stage/COMMIT" 2>/dev/null || true
tar -C "$stage" -cJf "$out/bench-bundle.tar.xz" .
echo "$out/bench-bundle.tar.xz: $(du -h "$out/bench-bundle.tar.xz" | cut -f1), commit $(head -1 "$stage/COMMIT")"
