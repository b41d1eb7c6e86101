#!/usr/bin/env bash
# Before/after of issue 11 (bench/RESULTS.md): a gistmem-bench built before the paged KV
# (BEFORE, e.g. from commit 41d846d) and the current build, same flags, lengths interleaved so
# both see the same machine.
#   bench/paged_kv_before_after.sh BEFORE_BINARY [AFTER_BINARY]
# Env: TIMED_TURNS (default 2), MODEL (a checkpoint both load; set it, since each binary's
# default model is its own commit's).
set -euo pipefail
before=${1:?usage: $0 BEFORE_BINARY [AFTER_BINARY]}
after=${2:-build/bench/gistmem-bench}
for n in 1024 2048 4096 8192 16384 32768; do
  echo "### before $n"
  "$before" ${MODEL:+--model "$MODEL"} --timed_turns "${TIMED_TURNS:-2}" --threads 2 --lengths "$n"
  echo "### after $n"
  "$after" ${MODEL:+--model "$MODEL"} --timed_turns "${TIMED_TURNS:-2}" --threads 2 --lengths "$n"
done
