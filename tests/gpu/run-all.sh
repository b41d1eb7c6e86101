#!/usr/bin/env bash
# Every GPU test binary on the GPU machine, then compute-sanitizer memcheck and racecheck on
# subsets; a compact summary on stdout, logs in $OUT (4 files). Run from the repository root:
#   bash tests/gpu/run-all.sh [BUNDLE_DIR]      (default .gpu/tests: bundle.tar.xz from
#                                                tests/gpu/bundle.sh)
# Needs: the NVIDIA driver, cuBLASLt 13 (PyTorch's copy is found), python3 (to unpack).
# Never hangs: every command has a timeout and the whole run a budget (RUN_ALL_BUDGET_S, 560 s).
# No timing assertions: the GPU may be busy with other work. Exit status 0 only if every test
# binary passed and the sanitizers found nothing.
# For a short device call: RUN_ALL_SKIP (a regex of binary names not to run, reported SKIP)
# and RUN_ALL_SANITIZE=0 (no compute-sanitizer runs, reported as skipped).
set -u
bundle=${1:-.gpu/tests}
out=${OUT:-/tmp/gistmem-gpu-out}
mkdir -p "$out"
budget=${RUN_ALL_BUDGET_S:-560}
start=$SECONDS
dir=$(mktemp -d /tmp/gistmem-gpu.XXXXXX)
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
  "$bundle/bundle.tar.xz" "$dir" || { echo "FAIL: cannot unpack $bundle/bundle.tar.xz"; exit 2; }
cublas=$(ls /usr/local/cuda/lib64/libcublasLt.so.13 \
  /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib/libcublasLt.so.13 \
  /usr/local/lib/python3*/dist-packages/nvidia/cu13/lib/libcublasLt.so.13 2>/dev/null | head -1)
[ -n "$cublas" ] || echo "WARNING: no libcublasLt.so.13 found; the engine tests will fail to load"
export LD_LIBRARY_PATH=$dir/lib${cublas:+:$(dirname "$cublas")}
# GISTMEM_TEST_DEVICE: integration tests bundled with EXTRA_TESTS run their servers on the GPU.
export GISTMEM_ROOT=$PWD GISTMEM_FIXTURES=$PWD/tests/fixtures/models GISTMEM_REQUIRE_GPU=1 \
  GISTMEM_TEST_DEVICE=cuda
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)

tests_log=$out/tests.log memcheck_log=$out/memcheck.log racecheck_log=$out/racecheck.log
summary=$out/summary.txt
: >"$tests_log"; : >"$memcheck_log"; : >"$racecheck_log"; : >"$summary"
say() { echo "$*" | tee -a "$summary"; }
failures=0

# run LIMIT LOG NAME COMMAND...: runs with the smaller of LIMIT and the budget left.
run() {
  local limit=$1 log=$2 name=$3; shift 3
  local left=$((budget - (SECONDS - start)))
  ((left < limit)) && limit=$left
  if ((limit < 5)); then
    echo "===== $name skipped: run budget spent" >>"$log"
    last_rc=125 last_s=0
    return 1
  fi
  echo "===== $name (limit ${limit}s)" >>"$log"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "===== $name rc=$rc $((SECONDS - t0))s" >>"$log"
  last_rc=$rc last_s=$((SECONDS - t0))
  return $rc
}

say "$(nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu \
  --format=csv,noheader 2>&1 | head -2)"
say "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), cuBLASLt ${cublas:-none}"

# Per binary: the limit (s). The side-by-side test runs a CPU reference for every sequence.
declare -A limit=([cuda_side_by_side_test]=150 [cuda_engine_test]=60 [cuda_transformer_test]=60
  [cuda_paged_attention_test]=120 [cuda_attention_speed_test]=120)
for bin in "$dir"/tests/*_test; do
  name=$(basename "$bin")
  if [ -n "${RUN_ALL_SKIP:-}" ] && [[ $name =~ ${RUN_ALL_SKIP} ]]; then
    say "$(printf '%-7s %-30s (RUN_ALL_SKIP)' SKIP "$name")"
    continue
  fi
  run "${limit[$name]:-45}" "$tests_log" "$name" "$bin"
  rc=$last_rc
  section=$(awk -v n="===== $name (" 'index($0, n) == 1 {on = 1; next} on && /^===== / {on = 0} on' \
    "$tests_log")
  passed=$(grep -oE '^\[  PASSED  \] [0-9]+' <<<"$section" | grep -oE '[0-9]+$')
  failed=$(grep -oE '^\[  FAILED  \] [0-9]+ test' <<<"$section" | grep -oE '[0-9]+' | head -1)
  worst=$(grep -oE 'max row-relative error [0-9.e+-]+' <<<"$section" | awk '{print $4}' |
    sort -g | tail -1)
  status=PASS
  if ((rc != 0)); then status=FAIL; failures=$((failures + 1)); fi
  ((rc == 124 || rc == 137)) && status=TIMEOUT
  ((rc == 125)) && status=SKIP
  say "$(printf '%-7s %-30s %3s passed %3s failed %4ss%s' "$status" "$name" "${passed:-0}" \
    "${failed:-0}" "$last_s" "${worst:+, worst row-relative logit error $worst}")"
  grep -E '^\[  FAILED  \] [A-Za-z]' <<<"$section" | sed -E 's/ \([0-9]+ ms\)$//; s/, where GetParam.*//' |
    sort -u | head -6 | sed 's/^\[  FAILED  \]/          failed:/' | tee -a "$summary"
done
# Variants: the engine-level tests again with every CUDA fast path off (their default is
# model::kCudaFastPathsByDefault), the transformer test on the CUDA-core kernel (its default is
# the tensor-core one where head_dim allows), and the graph and mirror comparisons (each
# compares its own fast path with its reference) under the CUDA-core kernel.
variant() {  # variant VAR=VALUE NAME
  local setting=$1 name=$2 rc section worst status
  [ -x "$dir/tests/$name" ] || return 0
  if [ -n "${RUN_ALL_SKIP:-}" ] && [[ $name =~ ${RUN_ALL_SKIP} ]]; then return 0; fi
  run "${limit[$name]:-45}" "$tests_log" "$name/$setting" env "$setting" "$dir/tests/$name"
  rc=$last_rc
  section=$(awk -v n="===== $name/$setting (" 'index($0, n) == 1 {on = 1; next} on && /^===== / {on = 0} on' \
    "$tests_log")
  worst=$(grep -oE 'max row-relative error [0-9.e+-]+' <<<"$section" | awk '{print $4}' | sort -g | tail -1)
  status=PASS
  if ((rc != 0)); then status=FAIL; failures=$((failures + 1)); fi
  ((rc == 124 || rc == 137)) && status=TIMEOUT
  ((rc == 125)) && status=SKIP
  say "$(printf '%-7s %-58s %4ss%s' "$status" "$name/$setting" "$last_s" "${worst:+, worst row-relative logit error $worst}")"
  grep -E '^\[  FAILED  \] [A-Za-z]' <<<"$section" | sed -E 's/ \([0-9]+ ms\)$//' | sort -u | head -6 |
    sed 's/^\[  FAILED  \]/          failed:/' | tee -a "$summary"
}
for name in cuda_engine_test cuda_policy_reference_test cuda_shipped_gist_test cuda_side_by_side_test; do
  variant GISTMEM_CUDA_FAST_PATHS=0 "$name"  # the reference paths (the default runs the fast ones)
done
variant GISTMEM_ATTENTION_KERNEL=cuda_cores cuda_transformer_test
for name in cuda_graph_test cuda_kv_mirror_test; do
  variant GISTMEM_ATTENTION_KERNEL=cuda_cores "$name"
done
# Which instructions the attention kernels use (tensor cores: HMMA, ldmatrix: LDSM, cp.async: LDGSTS).
if command -v cuobjdump >/dev/null && [ -x "$dir/tests/cuda_paged_attention_test" ]; then
  say "SASS    cuda_paged_attention_test: $(cuobjdump -sass "$dir/tests/cuda_paged_attention_test" 2>/dev/null |
    grep -oE '\b(HMMA|LDSM|LDGSTS)[.A-Z0-9]*' | sort | uniq -c | tr -s ' \n' ' ')"
fi
# The new tests' own summaries (sampler agreement, side-by-side per batch size and policy).
grep -hE '^vocab [0-9]+:|^batch +[0-9]+ |^all: next token|slots x +[0-9]+ rows,' "$tests_log" |
  tee -a "$summary"

# Sanitizers on subsets that stay short (the 128256-vocab sampler case and the 64-sequence
# attention case take minutes under the tools).
if [ "${RUN_ALL_SANITIZE:-1}" = 0 ]; then
  say "SKIP    compute-sanitizer runs (RUN_ALL_SANITIZE=0)"
elif [ -z "$sanitizer" ]; then
  say "FAIL    compute-sanitizer not found"; failures=$((failures + 1))
else
  T=$dir/tests
  # sanitize CASE...: each CASE is "tool binary [gtest args]"; the most needed first, since
  # the budget may end the list.
  sanitize() {
    local c tool name args rc section found status
    for c in "$@"; do
      read -r tool name args <<<"$c"
      if [ ! -x "$T/$name" ]; then
        say "FAIL    $tool $name: binary missing"; failures=$((failures + 1)); continue
      fi
      set -f  # the gtest filters are not file patterns
      # shellcheck disable=SC2086
      run 45 "$out/$tool.log" "$c" "$sanitizer" --tool "$tool" --print-limit 10 \
        --error-exitcode 99 "$T/$name" $args
      set +f
      rc=$last_rc
      section=$(awk -v n="===== $c (" 'index($0, n) == 1 {on = 1; next} on && /^===== / {on = 0} on' \
        "$out/$tool.log")
      found=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' <<<"$section" | tail -1)
      status=PASS
      if ((rc != 0)); then status=FAIL; failures=$((failures + 1)); fi
      ((rc == 124 || rc == 137)) && status=TIMEOUT
      ((rc == 125)) && status=SKIP
      say "$(printf '%-7s %-68s %4ss  %s' "$status" "$c" "$last_s" "${found:-no summary}")"
    done
  }
  sanitize \
    "memcheck cuda_sampler_test --gtest_filter=*/0:DeviceSamplerErrors.*" \
    "racecheck cuda_sampler_test --gtest_filter=*/0" \
    "memcheck cuda_policy_reference_test --gtest_filter=*/2:*Document*" \
    "memcheck cuda_shipped_gist_test" \
    "racecheck cuda_paged_attention_test --gtest_filter=*tensor_cores*:-*SixtyFour*" \
    "memcheck cuda_paged_attention_test --gtest_filter=*tensor_cores*" \
    "racecheck cuda_paged_attention_test --gtest_filter=*cuda_cores*:-*SixtyFour*:*WholePrefill*" \
    "memcheck cuda_engine_test --gtest_filter=*PageRows*:*EveryPolicy*" \
    "memcheck cuda_paged_attention_test --gtest_filter=*cuda_cores*" \
    "memcheck cuda_transformer_test --gtest_filter=*qwen2*" \
    "racecheck cuda_rms_norm_test"
fi
say "done in $((SECONDS - start))s: $failures failure(s); logs: $out/{summary.txt,tests.log,memcheck.log,racecheck.log}"
rm -rf "$dir"
((failures == 0))
