#!/usr/bin/env bash
# Issue 13's benchmark in one GPU call: the peers (bench/peers/peers.py) and our engine
# (gistmem-gpu-bench, packed by bench/gpu/pack.sh) on the same machine, same checkpoints, same
# HBM figure. Run from the repository root on the GPU machine; results go to $OUT:
#   env.txt       GPU, driver, commit of the bundle, date
#   peers.jsonl   HBM rate, checkpoints, transformers rows (eager, static cache + compile), floors
#   ours.jsonl    gistmem-gpu-bench rows for each shape
#   stderr.log    everything the parts wrote to stderr
#   summary.md    both side by side (bench/gpu/summarize.py): the rows for bench/RESULTS-gpu.md
#   tests.log, profile.txt, profile-csv.tar.xz, profile-detail.txt  when PARTS names tests /
#                 profile / profile-detail
#   service.jsonl, service.log  when PARTS names svc-* parts: the service rows
#                 (bench/gpu/service_bench.py) and the tail of their servers' logs
# Every part is time-limited; the whole run ends within TOTAL_S seconds (default 570).
# Environment (all optional):
#   PARTS="setup ours peers"  setup: env, HBM, checkpoints (reused when already written);
#                             ours: our rows; peers: transformers rows; profile (not by default):
#                             ncu kernel times of a few steps of each PROFILE_RUNS entry -> profile.txt;
#                             profile-detail (not by default): ncu's memory, stall and scheduler
#                             sections on the PROFILE_KERNEL regex -> profile-detail.txt;
#                             tests (first, when named): the GPU tests of TESTS_BUNDLE
#                             (tests/gpu/bundle.sh's bundle.tar.xz) -> tests.log
#   SHAPES=8b,1b  BUNDLE=.gpu-bench/bench-bundle.tar.xz  CKPT=/tmp/gistmem-ckpt
#   OURS_8B_S=240 OURS_1B_S=100  (caps of our two runs)  KV_GIB (our engine's KV pool: 100 on
#                             an H200; elsewhere 64% of the GPU's memory, so that the 8B weights
#                             and a 16K-token prefill's scratch fit beside it on an 80 GB H100)
#   OURS_ARGS="..."  (more gistmem-gpu-bench flags, e.g. --rows=decode,batched)
# The service rows (not by default; run after setup, before ours): gistmem-server of
# SVC_BUNDLE (bench/gpu/pack-service.sh) on $CKPT/llama-$SVC_SHAPE, driven over gRPC by
# bench/gpu/service_bench.py; each part is capped (seconds) and takes its own flags:
#   svc-resume   SVC_RESUME_S=200   SVC_RESUME_ARGS   (store / host tier TTFT vs scratch)
#   svc-streams  SVC_STREAMS_S=160  SVC_STREAMS_ARGS  (bench/load at 1, 8, 64, 256 streams)
#   svc-capacity SVC_CAPACITY_S=480 SVC_CAPACITY_ARGS (sessions held, aggregate decode)
#   SVC_BUNDLE=.gpu/svc/service-bundle.tar.xz SVC_SHAPE=8b SVC_DEVICE=cuda
#   SVC_WORK=/tmp/gistmem-svc (the parts' stores: up to ~2x the capacity pool on its disk)
#   SVC_SKIP_GPU_CHECKS=1 (no cuBLASLt needed), SVC_SERVER=BINARY (not the bundle's): the CPU dry
#   run of these parts (bench/gpu/service-dry-run.sh)
set -u
OUT=${OUT:-/tmp/gpu-bench-out}
TOTAL_S=${TOTAL_S:-570} PARTS=${PARTS:-"setup ours peers"} SHAPES=${SHAPES:-8b,1b}
BUNDLE=${BUNDLE:-.gpu-bench/bench-bundle.tar.xz} CKPT=${CKPT:-/tmp/gistmem-ckpt}
TESTS_BUNDLE=${TESTS_BUNDLE:-.gpu-bench/bundle.tar.xz}
if [ -z "${KV_GIB:-}" ]; then
  gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
  KV_GIB=$(( ${gpu_mib:-0} > 0 ? (gpu_mib * 64 / 100 / 1024 < 100 ? gpu_mib * 64 / 100 / 1024 : 100) : 100 ))
fi
OURS_8B_S=${OURS_8B_S:-240} OURS_1B_S=${OURS_1B_S:-100} OURS_ARGS=${OURS_ARGS:-}
SVC_BUNDLE=${SVC_BUNDLE:-.gpu/svc/service-bundle.tar.xz} SVC_SHAPE=${SVC_SHAPE:-8b}
SVC_DEVICE=${SVC_DEVICE:-cuda} SVC_WORK=${SVC_WORK:-/tmp/gistmem-svc}
SVC_RESUME_S=${SVC_RESUME_S:-200} SVC_STREAMS_S=${SVC_STREAMS_S:-160} SVC_CAPACITY_S=${SVC_CAPACITY_S:-480}
mkdir -p "$OUT"
start=$SECONDS
left() { echo $((TOTAL_S - (SECONDS - start))); }
min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }
lim() { local v; v=$(min "$1" "$(left)"); [ "$v" -ge 1 ] && echo "$v" || echo 1; }  # timeout 0: none
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
log() { echo "== $* ($((SECONDS - start))s)"; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  date -u +%Y-%m-%dT%H:%M:%SZ
  echo "PARTS=$PARTS SHAPES=$SHAPES KV_GIB=$KV_GIB TOTAL_S=$TOTAL_S OURS_ARGS=$OURS_ARGS"
} > "$OUT/env.txt" 2>&1

CB=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 \
  /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib/libcublasLt.so.13 2>/dev/null | head -1)")
# Nsight Compute for the profile parts (nsys is not on the GPU machine).
ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if has ours || has profile || has profile-detail; then
  rm -rf /tmp/gb && mkdir -p /tmp/gb
  python3 -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall('/tmp/gb')" "$BUNDLE" ||
    { echo "cannot unpack $BUNDLE (bench/gpu/pack.sh makes it)" | tee -a "$OUT/env.txt"; PARTS=${PARTS/ours/}; }
  echo "bundle commit: $(cat /tmp/gb/COMMIT 2>/dev/null)" >> "$OUT/env.txt"
fi
OURS_LD=/tmp/gb/lib:$CB  # for our binary only: the python parts keep their own libraries

if has tests; then
  # Correctness first: the GPU tests (tests/gpu/bundle.sh's bundle), before anything is timed.
  log tests
  rm -rf /tmp/gt && mkdir -p /tmp/gt
  if python3 -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall('/tmp/gt')" "$TESTS_BUNDLE"; then
    for t in /tmp/gt/tests/*_test; do
      t0=$SECONDS
      LD_LIBRARY_PATH=/tmp/gt/lib:$CB GISTMEM_REQUIRE_GPU=1 GISTMEM_FIXTURES=$PWD/tests/fixtures/models \
        GISTMEM_MODELS=$PWD/models timeout -k 5 "$(lim 150)" "$t" > /tmp/gt/out.log 2>&1
      rc=$?
      { echo "== $(basename "$t") rc=$rc $((SECONDS - t0))s"
        grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|Failure|max \|gpu|us, KV|TFLOP| vs " /tmp/gt/out.log | head -40
      } | tee -a "$OUT/tests.log"
    done
  else
    echo "cannot unpack $TESTS_BUNDLE (tests/gpu/bundle.sh BUILD .gpu-bench makes it)" | tee -a "$OUT/tests.log"
  fi
fi

if has setup; then
  log setup
  timeout -k 5 "$(lim 240)" python3 bench/peers/peers.py --parts env,hbm,checkpoint \
    --shapes "$SHAPES" --ckpt_dir "$CKPT" --budget_s "$(lim 230)" \
    >> "$OUT/peers.jsonl" 2>> "$OUT/stderr.log"
  grep -h '"part": "\(hbm\|checkpoint\|error\)"' "$OUT/peers.jsonl" | cut -c1-300
fi
HBM=$(python3 -c "
import json, sys
rates = [json.loads(l).get('tb_per_s') for l in open(sys.argv[1]) if 'torch.sum' in l]
print(rates[-1] if rates else 0)" "$OUT/peers.jsonl" 2>/dev/null || echo 0)
echo "HBM read rate for the floors: $HBM TB/s" | tee -a "$OUT/env.txt"

if has svc-resume || has svc-streams || has svc-capacity; then
  # The bundle, a Python with grpcio, and the client's stubs (tests/gpu/run-service.sh does the same).
  # SVC_SERVER=BINARY (the CPU dry run) uses that server and the checkout's stubs instead.
  G=$SVC_WORK/bundle
  rm -rf "$G" && mkdir -p "$G/bin" "$SVC_WORK"
  svc_ok=1
  PY=""
  for p in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
    if "$p" -c "import grpc, google.protobuf" 2>/dev/null; then PY=$p; break; fi
  done
  [ -n "$PY" ] || { echo "no python3 here imports grpc and google.protobuf" | tee -a "$OUT/env.txt"; svc_ok=0; }
  if [ -n "${SVC_SERVER:-}" ]; then
    ln -s "$(realpath "$SVC_SERVER")" "$G/bin/gistmem-server"
    [ -d clients/python/gistmem_client/_generated ] || PYTHON=$PY clients/python/generate_stubs.sh
  elif python3 -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$SVC_BUNDLE" "$G"; then
    rm -rf clients/python/gistmem_client/_generated
    cp -r "$G/python_generated" clients/python/gistmem_client/_generated
  else
    echo "cannot unpack $SVC_BUNDLE (bench/gpu/pack-service.sh BUILD .gpu/svc makes it)" | tee -a "$OUT/env.txt"
    svc_ok=0
  fi
  if [ "$svc_ok" = 1 ] && ! (cd clients/python && "$PY" -c "import gistmem_client") 2>> "$OUT/stderr.log"; then
    # The packed stubs come from protoc 3.21; a protobuf that refuses them gets new ones.
    "$PY" -c "import grpc_tools" 2>/dev/null && PYTHON=$PY timeout 60 clients/python/generate_stubs.sh >> "$OUT/stderr.log" 2>&1
    (cd clients/python && "$PY" -c "import gistmem_client") 2>> "$OUT/stderr.log" ||
      { echo "the Python client's stubs do not import (stderr.log)" | tee -a "$OUT/env.txt"; svc_ok=0; }
  fi
  { echo "service server: ${SVC_SERVER:-bundle commit $(head -1 "$G/COMMIT" 2>/dev/null)}; python: $PY" \
      "$($PY -c 'import grpc, google.protobuf as p; print("grpcio", grpc.__version__, "protobuf", p.__version__)' 2>&1 | tail -1)"
    df -h "$SVC_WORK" /dev/shm "$CKPT" 2>&1 | sort -u; } >> "$OUT/env.txt"
  SVC_LD=$G/lib:$CB
  [ "${SVC_SKIP_GPU_CHECKS:-0}" = 1 ] || [ -n "$CB" ] ||
    { echo "no libcublasLt.so.13 found for the server" | tee -a "$OUT/env.txt"; svc_ok=0; }
fi
svc() {  # svc PART CAP [part flags...]: service_bench.py PART, at most CAP seconds
  local part=$1 cap pid
  cap=$(min "$2" $(($(left) - 15))); shift 2
  if [ "${svc_ok:-0}" != 1 ] || [ "$cap" -lt 60 ]; then
    log "svc-$part skipped (setup ok: ${svc_ok:-0}, ${cap}s left)"
    echo "{\"part\": \"svc-$part\", \"policy\": \"-\", \"skipped\": \"setup ok ${svc_ok:-0}, ${cap} s left\"}" >> "$OUT/service.jsonl"
    return
  fi
  log "svc-$part (cap ${cap}s)"
  : > "$SVC_WORK/server.pids"
  timeout -k 10 "$cap" "$PY" bench/gpu/service_bench.py --server "$G/bin/gistmem-server" \
    --server_lib "$SVC_LD" --model "$CKPT/llama-$SVC_SHAPE" --label "llama-$SVC_SHAPE" \
    --device "$SVC_DEVICE" --work "$SVC_WORK" --out "$OUT/service.jsonl" \
    --server_log "$SVC_WORK/server.log" --budget_s $((cap - 20)) "$part" "$@" 2>> "$OUT/stderr.log"
  echo "svc-$part exit $? after $((SECONDS - start))s" >> "$OUT/env.txt"
  # A part cut off by its timeout may leave its server behind: end those it started.
  while read -r pid; do
    grep -qs gistmem-server "/proc/$pid/cmdline" && kill -9 "$pid"
  done < "$SVC_WORK/server.pids"
}
# shellcheck disable=SC2086
{ has svc-resume && svc resume "$SVC_RESUME_S" ${SVC_RESUME_ARGS:-}
  has svc-streams && svc streams "$SVC_STREAMS_S" ${SVC_STREAMS_ARGS:-}
  has svc-capacity && svc capacity "$SVC_CAPACITY_S" --arith_pool_gib "$KV_GIB" ${SVC_CAPACITY_ARGS:-}
  [ -f "$SVC_WORK/server.log" ] && tail -c 4000000 "$SVC_WORK/server.log" > "$OUT/service.log"; } || true

if has ours; then
  for shape in ${SHAPES//,/ }; do
    cap=$OURS_1B_S; [ "$shape" = 8b ] && cap=$OURS_8B_S
    cap=$(min "$cap" $(($(left) - 20)))
    [ "$cap" -gt 30 ] || { log "ours $shape skipped: no time left"; continue; }
    log "ours $shape (cap ${cap}s)"
    # shellcheck disable=SC2086
    LD_LIBRARY_PATH=$OURS_LD timeout -k 5 "$cap" /tmp/gb/bin/gistmem-gpu-bench --model "$CKPT/llama-$shape" \
      --label "llama-$shape" --hbm_tb_s "$HBM" --kv_pool_gib "$KV_GIB" \
      --budget_s $((cap - 60 > 20 ? cap - 60 : 20)) $OURS_ARGS \
      >> "$OUT/ours.jsonl" 2>> "$OUT/stderr.log"
    echo "exit $? after $((SECONDS - start))s" >> "$OUT/env.txt"
  done
fi

if has peers; then
  budget=$(($(left) - 25))
  if [ "$budget" -gt 60 ]; then
    log "peers rows (budget ${budget}s)"
    timeout -k 5 $((budget + 10)) python3 bench/peers/peers.py --parts rows --shapes "$SHAPES" \
      --hbm_tb_s "$HBM" --budget_s "$budget" >> "$OUT/peers.jsonl" 2>> "$OUT/stderr.log"
  else
    log "peers rows skipped: ${budget}s left"
  fi
fi

if has profile; then
  # Where the GPU time goes: ncu's duration of every kernel (each replayed alone, so kernel time
  # without launch gaps) over a few steps of each PROFILE_RUNS entry of the first shape,
  # summed per kernel by bench/gpu/ncu_summary.py -> profile.txt (raw CSVs: profile-csv.tar.xz).
  # An entry is NAME:ARGS with ARGS gistmem-gpu-bench flags joined by '+'.
  shape=${SHAPES%%,*}
  runs=${PROFILE_RUNS:-"decode2k:--rows=decode+--decode_contexts=2048+--decode_policies=full+--steps=3+--warmup=1 decode16k:--rows=decode+--decode_contexts=16384+--decode_policies=full,gist+--steps=3+--warmup=1 batched:--rows=batched+--steps=2+--warmup=1 prefill:--rows=prefill+--prefill_reps=1"}
  : > "$OUT/profile.txt"
  mkdir -p /tmp/gb/prof
  for entry in $runs; do
    name=${entry%%:*} args=${entry#*:} cap=$(lim 150)
    [ -n "$ncu_bin" ] || { echo "no ncu on this machine" >> "$OUT/profile.txt"; break; }
    [ "$cap" -gt 20 ] || { echo "## $name: skipped, no time left" >> "$OUT/profile.txt"; continue; }
    log "profile $shape $name (cap ${cap}s)"
    # shellcheck disable=SC2086
    LD_LIBRARY_PATH=$OURS_LD timeout -k 5 "$cap" "$ncu_bin" --csv --clock-control none \
      --metrics gpu__time_duration.sum /tmp/gb/bin/gistmem-gpu-bench --model "$CKPT/llama-$shape" \
      --label "llama-$shape" --kv_pool_gib=8 ${args//+/ } > "/tmp/gb/prof/$name.csv" 2>> "$OUT/stderr.log"
    rc=$?
    { echo "## $name (rc $rc): ${args//+/ }"
      grep '^{' "/tmp/gb/prof/$name.csv" | cut -c1-400
      python3 bench/gpu/ncu_summary.py "/tmp/gb/prof/$name.csv" --top 30; echo; } >> "$OUT/profile.txt" 2>&1
  done
  tar -C /tmp/gb/prof -cJf "$OUT/profile-csv.tar.xz" . 2>> "$OUT/stderr.log"
  head -c 6000 "$OUT/profile.txt"
fi

if has profile-detail; then
  # Why a kernel is as fast as it is: ncu's throughput, memory, warp-stall and scheduler sections
  # on a few launches of the kernels PROFILE_KERNEL names (a regex; default the attention
  # kernels) in the PROFILE_DETAIL_ARGS run of the first shape -> profile-detail.txt.
  shape=${SHAPES%%,*} cap=$(lim 200)
  args=${PROFILE_DETAIL_ARGS:-"--rows=decode+--decode_contexts=16384+--decode_policies=full+--steps=2+--warmup=1"}
  log "profile-detail $shape (cap ${cap}s)"
  if [ -n "$ncu_bin" ]; then
    # shellcheck disable=SC2086
    LD_LIBRARY_PATH=$OURS_LD timeout -k 5 "$cap" "$ncu_bin" --clock-control none \
      --kernel-name "regex:${PROFILE_KERNEL:-AttentionKernel|CombineKernel}" --launch-skip 20 \
      --launch-count "${PROFILE_COUNT:-4}" --section SpeedOfLight --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
      /tmp/gb/bin/gistmem-gpu-bench --model "$CKPT/llama-$shape" --label "llama-$shape" \
      --kv_pool_gib=8 ${args//+/ } > "$OUT/profile-detail.txt" 2>> "$OUT/stderr.log"
    echo "rc $?" >> "$OUT/profile-detail.txt"
  else
    echo "no ncu on this machine" > "$OUT/profile-detail.txt"
  fi
  grep -E "Kernel|Duration|Throughput|Stall|Eligible|Achieved Occupancy|Registers" \
    "$OUT/profile-detail.txt" | head -60
fi

: > "$OUT/summary.md"
{ has ours || has peers; } &&
  python3 bench/gpu/summarize.py "$OUT/peers.jsonl" "$OUT/ours.jsonl" > "$OUT/summary.md" 2>> "$OUT/stderr.log"
[ -f "$OUT/service.jsonl" ] &&
  python3 bench/gpu/service_summary.py "$OUT/service.jsonl" >> "$OUT/summary.md" 2>> "$OUT/stderr.log"
cat "$OUT/summary.md"
tail -c 3000 "$OUT/stderr.log" | grep -v '^\s*$' | tail -15
log done
