#!/usr/bin/env bash
# cuda-kernels branch: the CUDA engine test and the ported transformer test (2026-12-02).
# Copy to /work/main/.gpu-cuda/ with bundle-engine.tar.xz (tests/gpu/bundle.sh, or the two
# binaries alone) and run it from the repository root on the GPU machine (carry .gpu-cuda).
set -u
python3 -c "import tarfile; tarfile.open('.gpu-cuda/bundle-engine.tar.xz').extractall('/tmp/g')"
CB=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib/libcublasLt.so.13 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=/tmp/g/lib:$CB GISTMEM_FIXTURES=$PWD/tests/fixtures/models GISTMEM_MODELS=$PWD/models
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for t in cuda_engine_test cuda_transformer_test; do
  start=$SECONDS
  GISTMEM_REQUIRE_GPU=1 timeout 65 /tmp/g/tests/$t > $OUT/$t.log 2>&1; rc=$?
  echo "== $t rc=$rc $((SECONDS - start))s"
  grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|Failure|error|chunks, max|vs CPU|K/V rows" $OUT/$t.log | head -40
done
start=$SECONDS
GISTMEM_REQUIRE_GPU=1 timeout 20 compute-sanitizer --print-limit 5 --tool memcheck /tmp/g/tests/cuda_engine_test \
  --gtest_filter='*PageRows*' > $OUT/memcheck.log 2>&1
echo "== memcheck PageRows rc=$? $((SECONDS - start))s"; grep -E "ERROR SUMMARY|PASSED|FAILED" $OUT/memcheck.log
