#!/usr/bin/env bash
# The service on the GPU (issue 12): every service integration test against a --device cuda
# server, the Python client and gistmem-chat tests against a --device cuda gistmem-server
# (streaming, resume after restart and kill -9, batching, cancellation, documents, sessions
# leaving memory for the store and coming back), a gistmem-server --device cuda smoke run on
# models/gistmem-16k whose stats and metrics must show the cache on the GPU, and --device
# auto picking cuda with a GPU and cpu without one.
#
# Run from the repository root on the GPU machine, with the bundle of tests/gpu/bundle-service.sh
# at .gpu/service/bundle-service.tar.xz (carry .gpu/service). Logs go to $OUT (6 files); the
# summary is printed and written to $OUT/summary.txt. Every step runs under `timeout`; the
# whole run takes at most about 5 minutes.
set -u
OUT=${OUT:-/tmp/gistmem-run-service}
mkdir -p "$OUT"
root=$PWD
G=/tmp/gs
rm -rf "$G" && mkdir -p "$G/logs"
python3 -c "import tarfile; tarfile.open('.gpu/service/bundle-service.tar.xz').extractall('$G')" ||
  { echo "cannot unpack .gpu/service/bundle-service.tar.xz" | tee "$OUT/summary.txt"; exit 1; }
CB=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 \
  /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib/libcublasLt.so.13 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=$G/lib:$CB
# GISTMEM_RUN_DEVICE=cpu: a dry run of this script on a machine without GPU (the GPU checks fail).
export GISTMEM_FIXTURES=$root/tests/fixtures/models GISTMEM_TEST_DEVICE=${GISTMEM_RUN_DEVICE:-cuda}
summary=$OUT/summary.txt
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
say "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
say "   cuBLASLt from ${CB:-NOT FOUND}"
# GISTMEM_CUDA_FAST_PATHS=1 (inherited by every server and engine here) runs the whole suite on
# the CUDA fast paths; unset, on the engine's defaults (model::kCudaFastPathsByDefault).
say "   GISTMEM_CUDA_FAST_PATHS=${GISTMEM_CUDA_FAST_PATHS:-unset: the engine defaults}"

# Python with grpcio and protobuf: the one on PATH, else torch's venv.
PY=""
for p in python3 /opt/torch/.venv/bin/python3; do
  if "$p" -c "import grpc, google.protobuf" 2>/dev/null; then PY=$p; break; fi
done
say "   python: ${PY:-none with grpc+protobuf} $(${PY:-python3} -c 'import grpc, google.protobuf as p; print("grpcio", grpc.__version__, "protobuf", p.__version__)' 2>&1 | tail -1)"
rm -rf clients/python/gistmem_client/_generated
cp -r "$G/python_generated" clients/python/gistmem_client/_generated
# The packed stubs come from protoc 3.21; should this protobuf refuse them, make new ones with
# grpc_tools when it is there.
stubs_ok() { (cd clients/python && timeout 30 "$PY" -c "import gistmem_client") >"$G/stubs.log" 2>&1; }
if [[ -n $PY ]] && ! stubs_ok; then
  if "$PY" -c "import grpc_tools" 2>/dev/null; then
    PYTHON=$PY timeout 60 clients/python/generate_stubs.sh >>"$G/stubs.log" 2>&1
  fi
  stubs_ok || { echo "python stubs do not import, see below"; cat "$G/stubs.log"; } | tee -a "$summary"
fi

# 1. The C++ service integration tests, all at once (small: 1 GiB of KV each), 200 s at most.
run_gtest() {
  local t=$1 start=$SECONDS rc
  timeout -k 5 200 "$G/tests/$t" >"$G/logs/$t.log" 2>&1
  rc=$?
  local ok failed
  ok=$(grep -c '^\[       OK \]' "$G/logs/$t.log")
  failed=$(grep -cE '^\[  FAILED  \] .* \([0-9]+ ms\)$' "$G/logs/$t.log")
  echo "$t rc=$rc ok=$ok failed=$failed $((SECONDS - start))s" >"$G/logs/$t.result"
}
export -f run_gtest
export G
# GISTMEM_RUN_ONLY=REGEX: only the tests whose names match (a quick dry run); default all.
only=${GISTMEM_RUN_ONLY:-.}
(find "$G/tests" -type f -printf '%f\n' | grep -E "$only" | sort |
  xargs -r -P 12 -I{} bash -c 'run_gtest {}') &
gtests=$!

# 2. gistmem-chat and the Python client against a --device cuda server (one at a time each,
#    both alongside the C++ tests).
run_pytest() {
  local name=$1 start=$SECONDS rc
  (cd tests/integration && GISTMEM_SERVER=$G/bin/gistmem-server GISTMEM_CHAT=$G/bin/gistmem-chat \
    GISTMEM_TEST_MODEL=$GISTMEM_FIXTURES/llama-gqa-bf16 PYTHONDONTWRITEBYTECODE=1 \
    GISTMEM_SERVER_EXTRA_ARGS="--kv_pool_bytes 1073741824" \
    timeout -k 5 240 "$PY" -m unittest -v "$name") >"$G/logs/$name.log" 2>&1
  rc=$?
  local ran failures
  ran=$(sed -nE 's/^Ran ([0-9]+) tests?.*/\1/p' "$G/logs/$name.log" | tail -1)
  failures=$(grep -cE '^(FAIL|ERROR): ' "$G/logs/$name.log")
  echo "$name rc=$rc ran=${ran:-0} failed=$failures $((SECONDS - start))s" >"$G/logs/$name.result"
}
pytests=()
if [[ -n $PY ]]; then
  for name in chat_cli_test chat_python_test; do
    [[ $name =~ $only ]] || continue
    run_pytest "$name" &
    pytests+=($!)
  done
else
  echo "chat_python_test SKIPPED: no python3 here imports grpc and google.protobuf" \
    >"$G/logs/chat_python_test.result"
  (PY=python3; run_pytest chat_cli_test) &  # gistmem-chat's tests need no grpc module
  pytests+=($!)
fi

# 3. gistmem-server --device cuda on the shipped model: a turn, its stats and the metrics.
smoke() {
  local log=$OUT/server.log db=$G/smoke-db port=19391 ok=1
  rm -rf "$db"
  timeout -k 5 120 "$G/bin/gistmem-server" --device "$GISTMEM_TEST_DEVICE" --model "$root/models/gistmem-16k" \
    --db "$db" --listen 127.0.0.1:19390 --metrics_listen 127.0.0.1:$port \
    --kv_pool_bytes 1073741824 >"$log" 2>&1 &
  local server=$!
  for _ in $(seq 120); do grep -q "listening on" "$log" && break; sleep 0.5; done
  {
    echo "\$ gistmem-chat --new --message ... --json"
    local turn sid
    turn=$(timeout 60 "$G/bin/gistmem-chat" --server 127.0.0.1:19390 --new --message \
      "Hello! What is the capital of France?" --temperature 0 --max_tokens 16 --json 2>&1)
    echo "$turn"
    sid=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["session_id"])' \
      <<<"$turn" 2>/dev/null)
    echo "\$ gistmem-chat --session $sid --stats --json"
    local stats
    stats=$(timeout 30 "$G/bin/gistmem-chat" --server 127.0.0.1:19390 --session "$sid" --stats --json 2>&1)
    echo "$stats"
    if python3 -c 'import json,sys; s=json.loads(sys.stdin.read()); sys.exit(0 if int(s["bytes_gpu"]) > 0 and int(s["bytes_host"]) == 0 else 1)' <<<"$stats"; then
      echo "STATS OK: bytes_gpu > 0, bytes_host == 0"
    else
      echo "STATS FAIL: want bytes_gpu > 0 and bytes_host == 0"; ok=0
    fi
    echo "\$ curl http://127.0.0.1:$port/metrics | grep tier"
    python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$port/metrics', timeout=10).read().decode())" 2>&1 |
      grep -E '^gistmem_(sessions|cache_bytes)\{' | tee "$G/metrics.txt"
    if grep -qE '^gistmem_sessions\{tier="gpu"\} [1-9]' "$G/metrics.txt"; then
      echo "METRICS OK: gistmem_sessions{tier=\"gpu\"} > 0"
    else
      echo "METRICS FAIL: want gistmem_sessions{tier=\"gpu\"} > 0"; ok=0
    fi
  } >"$OUT/smoke.log" 2>&1
  kill -TERM $server 2>/dev/null; wait $server 2>/dev/null
  grep -E "device auto|model .* on|listening on" "$log" | head -5 >>"$OUT/smoke.log"
  # --device auto: cuda with the GPU, cpu when the CUDA runtime sees none.
  {
    echo "\$ gistmem-cli generate (default --device)"
    timeout 60 "$G/bin/gistmem-cli" generate --model "$root/models/gistmem-16k" --prompt "Hello" \
      --max_tokens 4 2>&1 | head -5
    echo "\$ CUDA_VISIBLE_DEVICES= gistmem-cli generate (default --device)"
    CUDA_VISIBLE_DEVICES='' timeout 60 "$G/bin/gistmem-cli" generate --model "$root/models/gistmem-16k" \
      --prompt "Hello" --max_tokens 4 2>&1 | head -5
  } >"$G/auto.log" 2>&1
  cat "$G/auto.log" >>"$OUT/smoke.log"
  if grep -q -- "--device auto: cuda" "$G/auto.log" && grep -q -- "--device auto: cpu" "$G/auto.log"; then
    echo "AUTO OK: cuda with the GPU, cpu without" >>"$OUT/smoke.log"
  else
    echo "AUTO FAIL: want '--device auto: cuda' and then '--device auto: cpu'" >>"$OUT/smoke.log"; ok=0
  fi
  # A KV budget larger than the GPU: a clear start-up error (exit 1), not a crash or a hang.
  {
    echo "\$ gistmem-server --device $GISTMEM_TEST_DEVICE --kv_pool_bytes 400000000000"
    timeout -k 5 60 "$G/bin/gistmem-server" --device "$GISTMEM_TEST_DEVICE" \
      --model "$root/models/gistmem-16k" --db "$G/oom-db" --listen 127.0.0.1:0 \
      --kv_pool_bytes 400000000000 2>&1 | tail -3
    echo "exit ${PIPESTATUS[0]}"
  } >"$G/oom.log" 2>&1
  cat "$G/oom.log" >>"$OUT/smoke.log"
  if grep -q "^exit 1$" "$G/oom.log" && grep -q "RESOURCE_EXHAUSTED" "$G/oom.log"; then
    echo "TOO-BIG OK: exit 1 with RESOURCE_EXHAUSTED" >>"$OUT/smoke.log"
  else
    echo "TOO-BIG FAIL: want exit 1 and RESOURCE_EXHAUSTED" >>"$OUT/smoke.log"; ok=0
  fi
  echo "smoke ok=$ok" >"$G/logs/smoke.result"
}
smoke

wait $gtests
for p in "${pytests[@]}"; do wait "$p"; done

say "== C++ service integration tests (GISTMEM_TEST_DEVICE=$GISTMEM_TEST_DEVICE)"
cat "$G"/logs/service_*.result 2>/dev/null | tee -a "$summary"
say "== gistmem-chat / Python client against gistmem-server --device $GISTMEM_TEST_DEVICE (python: ${PY:-none})"
cat "$G"/logs/chat_*.result 2>/dev/null | tee -a "$summary"
say "== smoke: gistmem-server --device $GISTMEM_TEST_DEVICE --model models/gistmem-16k"
grep -E "OK:|FAIL:" "$OUT/smoke.log" | tee -a "$summary"
pass=$(cat "$G"/logs/*.result | grep -cE 'rc=0 .*failed=0|smoke ok=1')
total=$(cat "$G"/logs/*.result | grep -vc SKIPPED)
gt_ok=$(cat "$G"/logs/service_*.result | sed -nE 's/.* ok=([0-9]+).*/\1/p' | awk '{s += $1} END {print s + 0}')
gt_failed=$(cat "$G"/logs/service_*.result | sed -nE 's/.* failed=([0-9]+).*/\1/p' | awk '{s += $1} END {print s + 0}')
# Logs: every test's full output, cut to 15 MiB; the failures' lines apart.
for f in "$G"/logs/service_*.log; do
  echo "######## $(basename "$f")"; cat "$f"
done | tail -c 15M >"$OUT/service-tests.log"
for f in "$G"/logs/chat_*.log; do
  echo "######## $(basename "$f")"; cat "$f"
done | tail -c 15M >"$OUT/chat-tests.log"
grep -HE '^\[  FAILED  \]|Failure$|error:|^FAIL:|^ERROR:|Traceback|Error: ' "$G"/logs/*.log |
  sed "s|^$G/logs/||" | head -300 >"$OUT/failures.txt"
if [[ -s $OUT/failures.txt ]]; then
  say "== first failure lines (all in failures.txt)"
  head -15 "$OUT/failures.txt" | cut -c1-220 | tee -a "$summary"
fi
say "== SUMMARY: $pass/$total steps passed; gtest cases ok=${gt_ok:-?} failed=${gt_failed:-?}; $SECONDS s"
rm -rf clients/python/gistmem_client/_generated
