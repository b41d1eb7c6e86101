#!/usr/bin/env bash
# Builds bench/lm_loss.cc (gistmem-lm-loss) against the libraries of an existing CMake build,
# with the compile flags and link line CMake gave bench/gistmem-bench, without changing the
# build's configuration (the binary goes to $OUT, default /tmp/gistmem-lm-loss/).
#   bench/build_lm_loss.sh     # needs a built tree (cmake --build build); builds nothing in it
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD:-$root/build}
out=${OUT:-/tmp/gistmem-lm-loss}
mkdir -p "$out"
for lib in model/libgistmem_model.a memory/libgistmem_memory.a; do
  [[ -f $build/$lib ]] || { echo "$build/$lib is missing: cmake --build $build first" >&2; exit 1; }
done
flags=$(/usr/bin/python3 - "$build" <<'PY'
import json, shlex, sys
for e in json.load(open(sys.argv[1] + "/compile_commands.json")):
    if e["file"].endswith("bench/memory_bench.cc"):
        words = shlex.split(e["command"])[1:]
        keep, skip = [], False
        for w in words:
            if skip:
                skip = False
            elif w in ("-o", "-c"):
                skip = True
            else:
                keep.append(w)
        print(" ".join(shlex.quote(w) for w in keep))
        break
else:
    sys.exit("no compile command for bench/memory_bench.cc in compile_commands.json")
PY
)
link=$(awk '/^build bench\/gistmem-bench:/ {found = 1} found && /^  LINK_LIBRARIES = / {
  sub(/^  LINK_LIBRARIES = /, ""); print; exit }' "$build/build.ninja")
[[ -n $link ]] || { echo "no link line for bench/gistmem-bench in $build/build.ninja" >&2; exit 1; }
# A CUDA build links cudart_static and cudadevrt from the toolkit's directory (-L, not in LINK_LIBRARIES).
link_path=$(awk '/^build bench\/gistmem-bench:/ {found = 1} found && /^  LINK_PATH = / {
  sub(/^  LINK_PATH = /, ""); print; exit } found && /^$/ {exit}' "$build/build.ninja")
cd "$build"
eval "c++ $flags -o '$out/gistmem-lm-loss' '$root/bench/lm_loss.cc' $link_path $link"
echo "$out/gistmem-lm-loss"
