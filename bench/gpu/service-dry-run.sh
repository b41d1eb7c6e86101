#!/usr/bin/env bash
# The CPU dry run of bench/gpu/run.sh's service parts (svc-resume, svc-streams, svc-capacity):
# the same run.sh and Python the GPU call runs, against gistmem-server --device cpu on a tiny
# random checkpoint with the GPU checkpoints' vocabulary and tokenizer
# (bench/gpu/tiny_checkpoint.py), every size scaled down (2K-token contexts, pools of MiBs,
# 3-second load levels). Fails unless every part wrote its rows, without errors.
#
#   bench/gpu/service-dry-run.sh SERVER|BUNDLE [OUT_DIR]
#     SERVER  a gistmem-server binary (ctest service_bench_dry_run), or
#     BUNDLE  bench/gpu/pack-service.sh's service-bundle.tar.xz: its own server, shims and stubs
#             (then cuBLASLt must be found as on the GPU machine: /usr/local/cuda/lib64)
set -euo pipefail
[[ $# -ge 1 ]] || { sed -n '2,12p' "$0"; exit 2; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/gistmem-svc-dry.XXXXXX)
out=${2:-$work/out}
# Stores and checkpoint always go; the results stay only when asked for or on failure.
trap 'if [[ -n ${2:-} || ${ok:-0} = 1 ]]; then rm -rf "$work"; else rm -rf "$work/svc" "$work/ckpt"; echo "kept $work"; fi' EXIT
python3 "$root/bench/gpu/tiny_checkpoint.py" "$work/ckpt/llama-tiny" >/dev/null
if [[ $1 == *.tar.xz ]]; then
  export SVC_BUNDLE=$(realpath "$1")
else
  export SVC_SERVER=$(realpath "$1") SVC_SKIP_GPU_CHECKS=1
fi
cd "$root"
OUT=$out CKPT=$work/ckpt SVC_SHAPE=tiny SVC_DEVICE=cpu SVC_WORK=$work/svc TOTAL_S=240 \
  PARTS="svc-resume svc-streams svc-capacity" \
  SVC_RESUME_ARGS="--context 2048 --pool_gib 0.05" \
  SVC_STREAMS_ARGS="--levels 1,4 --duration 3 --per_process 2 --pool_gib 0.25 --max_tokens 16" \
  SVC_CAPACITY_ARGS="--context 2048 --pool_gib 0.004 --append_chunk 1024 --decode_tokens 8 --decode_reserve_s 10" \
  bash bench/gpu/run.sh
python3 - "$out/service.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
bad = [r for r in rows if "error" in r or "skipped" in r]
cap = {r["policy"]: r for r in rows if r["part"] == "svc-capacity" and "error" not in r}
res = [r for r in rows if r["part"] == "svc-resume" and "store_ms" in r]
streams = [r for r in rows if r["part"] == "svc-streams" and r.get("turns")]
problems = [f"{r['part']} {r.get('policy')}: {r.get('error') or r.get('skipped')}"[:300] for r in bad]
for name in ("gist", "full", "pool", "window"):
    r = cap.get(name)
    if not r or r.get("capped_by") != "kv_pool" or (r.get("decode") or {}).get("turns_ok", 0) < 1:
        problems.append(f"capacity {name}: want capped_by kv_pool and a decode round, got "
                        f"{r and (r.get('capped_by'), r.get('decode', {}).get('turns_ok'))}")
if not res or len(res[0]["store_ms"]) < 2 or len(res[0]["host_ms"]) < 2:
    problems.append("resume: want store and host-tier timings")
if len(streams) != 2 or any(r["errors"] or r["generator_failures"] for r in streams):
    problems.append("streams: want 2 levels without errors")
print("\n".join(problems) or f"dry run OK: {len(rows)} rows")
sys.exit(1 if problems else 0)
EOF
ok=1
