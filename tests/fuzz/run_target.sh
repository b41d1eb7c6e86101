#!/usr/bin/env bash
# Runs one fuzz target for SECONDS on a scratch copy of its committed corpus (new inputs go to
# the scratch folder, never into the source tree); crashes land in SCRATCH.artifacts/.
#   tests/fuzz/run_target.sh BINARY SEED_CORPUS_DIR SCRATCH_DIR SECONDS [libFuzzer flags...]
set -euo pipefail
binary=$1 seeds=$2 scratch=$3 seconds=$4
shift 4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
name=$(basename "$binary")
rm -rf "$scratch" "$scratch.artifacts"
mkdir -p "$scratch" "$scratch.artifacts"
dict=()
if [[ -f $here/${name%_fuzzer}.dict ]]; then dict=("-dict=$here/${name%_fuzzer}.dict"); fi
exec "$binary" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=3072 -max_len=65536 \
  -print_final_stats=1 -artifact_prefix="$scratch.artifacts/" "${dict[@]}" "$@" "$scratch" "$seeds"
