#!/usr/bin/env bash
# The long-context recipe on the GPU machine, in pieces of < 10 minutes (train_long.py).
# Run from the folder that holds the training/*.py files, tokenizer-digits.json and data/
# (corpus.jsonl.xz or corpus.jsonl.gz, lists.json); see README.md "2026-12-02 pilot" for how
# that folder is staged and carried.
#
#   PIECE=1 OUT=$OUT bash run_long.sh     # first piece: fresh model
#   PIECE=2 OUT=$OUT bash run_long.sh     # resumes /tmp/long/state.pt (same machine, still held)
#   ...
#   LAST=1 PIECE=3 OUT=$OUT bash run_long.sh   # the last piece evaluates and bundles ckpt.pt
#
# MINUTES is the optimisation budget over all pieces (the learning-rate schedule and the
# curriculum follow it); DEADLINE ends each piece that many seconds after train_long.py starts.
# state.pt (fp32 weights + AdamW, ~215 MB) stays on the machine: the pieces must run while it
# is held (calls less than 30 s apart, at most 30 minutes in all), or start again from piece 1.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/long-out}
RUN=${RUN:-/tmp/long}
mkdir -p "$OUT" "$RUN"
ARGS=(--tokenizer tokenizer-digits.json --data data --out "$RUN" --compile
      --minutes "${MINUTES:-22}" --deadline "${DEADLINE:-560}")
[ "${PIECE:-1}" != 1 ] && ARGS+=(--resume "$RUN/state.pt")
if [ -n "$LAST" ]; then ARGS+=(--eval-reserve 90); else ARGS+=(--no-eval --eval-reserve 25); fi
python3 train_long.py "${ARGS[@]}" "$@" > "$OUT/train-piece${PIECE:-1}.log" 2>&1
status=$?
tail -n 25 "$OUT/train-piece${PIECE:-1}.log"
cp "$RUN/metrics.json" "$OUT/metrics-piece${PIECE:-1}.json" 2>/dev/null
[ -n "$LAST" ] && split -b 15m -d "$RUN/ckpt.pt" "$OUT/ckpt.pt."   # cat ckpt.pt.* > ckpt.pt
exit $status
