#!/usr/bin/env bash
# Stops the test cluster that tests/cluster/start-ceph.sh started in DIR (kill by the pid
# files in DIR/run, then waits for them to exit). Leaves DIR in place; --wipe removes it too.
#
#   tests/cluster/stop-ceph.sh [DIR] [--wipe]
set -uo pipefail
dir=${1:-${GISTMEM_CEPH_DIR:-/tmp/gistmem-ceph}}
wipe=${2:-}
pids=()
for f in "$dir"/run/*.pid; do
  [[ -f $f ]] || continue
  pid=$(cat "$f")
  # Only a Ceph daemon of ours: the pid file may be stale and the pid reused.
  if [[ -n $pid ]] && grep -qa -- "$dir/ceph.conf" "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid" 2>/dev/null && pids+=("$pid")
  fi
  rm -f "$f"
done
for pid in "${pids[@]}"; do
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
done
if [[ $wipe == --wipe ]]; then rm -rf "$dir"; fi
exit 0
