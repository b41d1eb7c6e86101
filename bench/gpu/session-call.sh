#!/usr/bin/env bash
# One device call that checks and measures a change: the GPU tests (tests/gpu/run-all.sh), the
# 1B rows, split sweeps of decode attention (--attention_kv_chunk at batch 1,
# --attention_ctas_per_sm at 32 x 4K) with a cuBLASLt-only A/B (GISTMEM_GEMV=0), then the 8B
# rows if time is left. Everything comes back as one file, $OUT/results.tar.xz (ra/: run-all's logs and the call's stdout pieces; b1/, b8/:
# bench/gpu/run.sh's outputs; sweep.jsonl), because a call returns at most eight files.
# From the repository root on the GPU machine, carrying .gpu/tests and .gpu-bench:
#   TOTAL_LIMIT=540 bash bench/gpu/session-call.sh        # seconds the whole call may take
# RUN_ALL_BUDGET_S (230) and B1_S (110) cap the first two parts; the 8B part runs only with more
# than 150 s left (its checkpoint is written first: ~30 s, the engine loads in ~32 s).
set -u -o pipefail
T0=$SECONDS
RUN_ALL_BUDGET_S=${RUN_ALL_BUDGET_S:-230} OUT=/tmp/ra bash tests/gpu/run-all.sh > /tmp/ra.out 2>&1
echo "== run-all rc=$? $((SECONDS - T0))s"
tail -32 /tmp/ra.out
OUT=/tmp/b1 PARTS="setup ours" SHAPES=1b TOTAL_S=${B1_S:-110} OURS_1B_S=80 KV_GIB=30 \
  OURS_ARGS="--rows=decode,batched,prefill" bash bench/gpu/run.sh > /tmp/b1.out 2>&1
echo "== 1b $((SECONDS - T0))s"
grep -v '| - | - | - |' /tmp/b1/summary.md | head -24
CB=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 \
  /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib/libcublasLt.so.13 2>/dev/null | head -1)")
bench=(env "LD_LIBRARY_PATH=/tmp/gb/lib:$CB" timeout 30 /tmp/gb/bin/gistmem-gpu-bench
  --model /tmp/gistmem-ckpt/llama-1b --label llama-1b --kv_pool_gib=8 --steps=10 --warmup=2
  --hbm_tb_s=3.1)
{
  for chunk in 0 256 512 1024; do
    "${bench[@]}" --rows=decode --decode_contexts=2048,16384 --decode_policies=full \
      --attention_kv_chunk=$chunk
  done
  # 32 x 4K: the split aims at N CTAs a multiprocessor; a decode CTA fits 3 (head_dim 64) or 2
  # (128) at once, so the default 4 makes 1.3 or 2 waves.
  for ctas in 3 6 12; do
    "${bench[@]}" --rows=batched --attention_ctas_per_sm=$ctas
  done
  GISTMEM_GEMV=0 "${bench[@]}" --rows=decode,batched --decode_contexts=2048,16384 \
    --decode_policies=full
} 2>&1 | grep '^{' | grep -v '"row":"\(env\|done\|d2h\)"' > /tmp/sweep.jsonl
echo "== sweep $((SECONDS - T0))s"
python3 - /tmp/sweep.jsonl <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    a = d.get("attention", {})
    print(d.get("row"), d.get("context"), "chunk", a.get("kv_chunk_flag"),
          "ctas/SM", a.get("ctas_per_sm_flag"), "step", round(d.get("ms_per_step", 0), 3),
          "attention", round(a.get("ms", 0), 3), "ctas", a.get("decode_ctas"), d.get("error", ""))
PY
left=$((${TOTAL_LIMIT:-540} - (SECONDS - T0)))
if [ "$left" -gt 150 ]; then
  OUT=/tmp/b8 PARTS="setup ours" SHAPES=8b TOTAL_S=$((left - 15)) OURS_8B_S=$((left - 65)) \
    OURS_ARGS="--rows=decode,batched,prefill --prefill_reps=1" bash bench/gpu/run.sh > /tmp/b8.out 2>&1
  echo "== 8b $((SECONDS - T0))s"
  grep -v '| - | - | - |' /tmp/b8/summary.md | head -24
else
  echo "== 8b skipped: ${left}s left"
fi
mkdir -p /tmp/ra && cp /tmp/*.out /tmp/ra/ 2>/dev/null
tar -C /tmp -cJf "$OUT/results.tar.xz" ra b1 b8 sweep.jsonl 2>/dev/null
echo "== done $((SECONDS - T0))s"
