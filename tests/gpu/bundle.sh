#!/usr/bin/env bash
# Packs the GPU test binaries for the GPU machine, like /work/shared/tools/gpu-bundle.sh but
# without cuBLAS/cuBLASLt (over 500 MB; the GPU machine's CUDA 13 toolkit has them: put its
# lib64 on LD_LIBRARY_PATH after the bundle's lib/).
#   tests/gpu/bundle.sh BUILD_DIR OUT_DIR [EXTRA_PATH...]
# EXTRA_TESTS="BINARY..." adds other test binaries (with the libraries they load) to tests/,
# e.g. an integration test that GISTMEM_TEST_DEVICE=cuda points at the GPU.
set -eu
build=$1 out=$2; shift 2
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" "$stage/tests" "$out"
mapfile -t bins < <(find "$build/tests/gpu" -maxdepth 1 -type f -perm -u+x -name '*_test')
read -r -a extra_tests <<<"${EXTRA_TESTS:-}"
bins+=("${extra_tests[@]}")
for b in "${bins[@]}"; do strip -o "$stage/tests/$(basename "$b")" "$b"; done
skip='ld-linux|/libc\.so|/libm\.so|libstdc\+\+|libgcc_s|libpthread|/libdl\.so|/librt\.so|libcuda\.so|libcublas'
for b in "${bins[@]}"; do ldd "$b" | awk '/=>/ {print $3}'; done | sort -u | grep -vE "$skip" |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
for extra in "$@"; do cp -r "$extra" "$stage/"; done
tar -C "$stage" -cf - . | xz --lzma2=preset=${XZ_PRESET:-6},dict=128MiB -T1 >"$out/bundle.tar.xz"
echo "$out/bundle.tar.xz: $(du -h "$out/bundle.tar.xz" | cut -f1), ${#bins[@]} binaries"
