#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan + UBSan + libFuzzer) in BUILD_DIR and runs each
# for SECONDS on the committed corpus (ctest -L fuzz there). The normal build's fuzz_smoke test
# calls this; see tests/fuzz/README.md for longer runs.
#   tests/fuzz/run.sh [BUILD_DIR (default build-fuzz)] [SECONDS (default 30)]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-$root/build-fuzz}
seconds=${2:-30}
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER="${CC:-clang-14}" -DCMAKE_CXX_COMPILER="${CXX:-clang++-14}" \
    -DGISTMEM_SANITIZE=ON -DGISTMEM_FUZZ=ON -DGISTMEM_CUDA=OFF -DGISTMEM_FUZZ_SECONDS="$seconds"
else
  cmake -S "$root" -B "$build" -DGISTMEM_FUZZ_SECONDS="$seconds"
fi
cmake --build "$build" --target gistmem_fuzzers -j "$(nproc)"
ctest --test-dir "$build" -L fuzz --output-on-failure
