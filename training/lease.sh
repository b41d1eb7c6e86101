#!/usr/bin/env bash
# The whole issue-14 training run on one held GPU machine, in the background, polled between
# device calls. Run from the staged folder (README.md "2026-12-02 pilot": training/*.py,
# tokenizer-digits.json, data/corpus.jsonl.xz, data/lists.json, this script):
#
#   cd .train && bash lease.sh start     # returns in seconds; the run goes on under setsid
#   cd .train && bash lease.sh poll      # progress; once done, the results into $OUT
#   cd .train && bash lease.sh finish    # end training now: evaluate, export, DONE as usual
#   cd .train && bash lease.sh export    # only after a FAILED export: export ckpt.pt again
#
# `start` copies this folder to $RUN/src (a later call that carries .train again replaces
# .train, not the running copy) and runs, with no input and everything logged to
# $RUN/lease.log:
#   1. train_long.py: MINUTES (20) of optimisation, held-out evaluation at the end, ckpt.pt
#      (bf16) every SAVE_EVERY seconds and at the end;
#   2. export.py: models/$NAME (bf16 safetensors in shards <= 12 MB, config.json with
#      max_position_embeddings 16384 and rope_theta 500000, tokenizer.json = the digits
#      tokenizer, gist_config.json) and tests/fixtures/$NAME (transformers' logits, as for
#      gistmem-tiny, plus the 4096-token long fixture), with export.py's checks;
#   3. $RUN/DONE, or $RUN/FAILED with the stage that failed.
# `poll` prints the stage, elapsed time and the last log lines. When DONE it puts into $OUT:
# the model-*.safetensors shards, and results.tar.gz (every other file of models/$NAME and
# tests/fixtures/$NAME, and training/logs/$NAME/{train.log,metrics.json,lease.log}, paths as
# in the repository). When FAILED: lease.log, results.tar.gz of whatever exists, and the
# latest ckpt.pt in 15 MiB parts (ckpt.pt.00, ...; cat ckpt.pt.* > ckpt.pt).
#
# Knobs (environment): MINUTES, DEADLINE (s after train_long.py starts; training stops
# EVAL_RESERVE s before it), SAVE_EVERY, NAME, RUN, PYTHON, TRAIN_ARGS (appended to
# train_long.py's arguments; used by the CPU test), LONG (tokens of the long fixture, 0 = none),
# COMPILE (empty: no torch.compile), CKPT=1 with poll (the latest ckpt.pt while running).
set -u -o pipefail
export PYTHONUNBUFFERED=1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN=${RUN:-/tmp/gistmem-train}
NAME=${NAME:-gistmem-16k}
PYTHON=${PYTHON:-python3}
MINUTES=${MINUTES:-20}
# Training needs about 100 s beyond its budget (data, two compilations, first steps of each
# mode, which are not counted), then EVAL_RESERVE for the held-out evaluation (~35 s).
DEADLINE=${DEADLINE:-$("$PYTHON" -c "print(int($MINUTES * 60 + 190))")}
EVAL_RESERVE=${EVAL_RESERVE:-60}
SAVE_EVERY=${SAVE_EVERY:-180}
LONG=${LONG:-4096}
COMPILE=${COMPILE---compile}  # COMPILE= (empty) for torch without torch.compile (CPU test)
OUT=${OUT:-/tmp/gistmem-train-out}
# The pilot's recipe (train_long.py's defaults) for the 2K phase; from the 16K phase on,
# rows shift to the gist modes (full recalled 98% after 272 s of the pilot; r8 is the target).
LATE_MODES=${LATE_MODES:-full:0.2,r4:0.25,r8:0.4,r16:0.15}

log() { echo "[lease $(date -u +%H:%M:%S)] $*"; }
# Without coreutils' timeout (an image without it): run with no limit (our calls are
# `timeout -k K LIMIT command...`).
command -v timeout > /dev/null || timeout() { shift 3; "$@"; }

stage() {  # stage NAME COMMAND...: runs it, or writes FAILED and exits
  local name=$1
  shift
  echo "$name" > "$RUN/STAGE"
  log "stage $name: $*"
  "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then
    log "stage $name FAILED (exit $rc)"
    echo "stage $name exit $rc at $(date -u +%FT%TZ)" > "$RUN/FAILED"
    exit $rc
  fi
  log "stage $name ok"
}

do_export() {
  rm -rf "$RUN/export"
  mkdir -p "$RUN/export/models" "$RUN/export/tests/fixtures"
  cd "$RUN/src" &&
    timeout -k 10 900 "$PYTHON" export.py --ckpt "$RUN/out/ckpt.pt" \
      --tokenizer tokenizer-digits.json --name "$NAME" --out "$RUN/export/models/$NAME" \
      --fixtures "$RUN/export/tests/fixtures/$NAME" --max-shard 12MB --max-file-mib 15 \
      --long "$LONG"
}

run() {  # the background job
  trap '[ -e "$RUN/DONE" ] || [ -e "$RUN/FAILED" ] || echo "exited unexpectedly" > "$RUN/FAILED"' EXIT
  date +%s > "$RUN/STARTED"
  log "run: NAME=$NAME MINUTES=$MINUTES DEADLINE=$DEADLINE EVAL_RESERVE=$EVAL_RESERVE" \
    "SAVE_EVERY=$SAVE_EVERY LATE_MODES=$LATE_MODES LONG=$LONG RUN=$RUN host ${HOSTNAME:-?}"
  cd "$RUN/src" || exit 1
  "$PYTHON" -c 'import torch, sys; print("python", sys.version.split()[0], "torch",
torch.__version__, "cuda", torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
  nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv 2>/dev/null
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of words
  stage train timeout -k 30 $((DEADLINE + 300)) "$PYTHON" train_long.py \
    --tokenizer tokenizer-digits.json --data data --out "$RUN/out" $COMPILE \
    --minutes "$MINUTES" --deadline "$DEADLINE" --eval-reserve "$EVAL_RESERVE" \
    --save-every "$SAVE_EVERY" --late-mode-weights "$LATE_MODES" --stop-file "$RUN/STOP" \
    ${TRAIN_ARGS:-}
  stage export do_export
  echo "done at $(date -u +%FT%TZ), $(($(date +%s) - $(cat "$RUN/STARTED"))) s" > "$RUN/DONE"
  log "DONE"
}

pack() {  # pack DIR: results.tar.gz (+ shards or ckpt parts) into DIR
  local into=$1 stage_dir="$RUN/pack"
  rm -rf "$stage_dir"
  mkdir -p "$stage_dir/training/logs/$NAME" "$into"
  [ -d "$RUN/export/models" ] && cp -a "$RUN/export/models" "$stage_dir/"
  [ -d "$RUN/export/tests" ] && cp -a "$RUN/export/tests" "$stage_dir/"
  for f in out/train.log out/metrics.json lease.log; do
    [ -e "$RUN/$f" ] && cp "$RUN/$f" "$stage_dir/training/logs/$NAME/"
  done
  if [ -d "$stage_dir/models/$NAME" ]; then
    find "$stage_dir/models/$NAME" -name 'model-*.safetensors' -exec mv {} "$into/" \;
    find "$stage_dir/models/$NAME" -name 'model.safetensors' -exec mv {} "$into/" \;
  fi
  tar czf "$into/results.tar.gz" -C "$stage_dir" .
  if [ -e "$RUN/FAILED" ] && [ -e "$RUN/out/ckpt.pt" ]; then
    split -b 15m -d "$RUN/out/ckpt.pt" "$into/ckpt.pt."
  fi
  cp "$RUN/lease.log" "$into/lease.log" 2>/dev/null
  # The device tool returns at most 8 files of <= 16 MiB.
  local count big
  count=$(find "$into" -type f | wc -l)
  big=$(find "$into" -type f -size +16M)
  log "packed into $into: $count files$( [ -n "$big" ] && echo "; OVER 16 MiB: $big")"
  (cd "$into" && ls -l)
}

poll() {
  if [ ! -e "$RUN/STARTED" ]; then
    log "no run in $RUN (not started, or the machine is a fresh one)"
    [ -e "$RUN/lease.log" ] && tail -n 20 "$RUN/lease.log"
    return 1
  fi
  local elapsed=$(($(date +%s) - $(cat "$RUN/STARTED")))
  local state=running
  [ -e "$RUN/DONE" ] && state="DONE ($(cat "$RUN/DONE"))"
  [ -e "$RUN/FAILED" ] && state="FAILED ($(cat "$RUN/FAILED"))"
  log "elapsed $((elapsed / 60))m$((elapsed % 60))s, stage $(cat "$RUN/STAGE" 2>/dev/null), $state"
  grep -E '^\[ *[0-9.]+s\] (step|phase|piece|saved|held-out)' "$RUN/lease.log" | tail -n 4
  log "last lines of $RUN/lease.log:"
  tail -n "${LINES_SHOWN:-14}" "$RUN/lease.log"
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null
  if [ -e "$RUN/DONE" ] || [ -e "$RUN/FAILED" ]; then
    pack "$OUT"
  else
    cp "$RUN/lease.log" "$OUT/lease.log" 2>/dev/null
    if [ -n "${CKPT:-}" ] && [ -e "$RUN/out/ckpt.pt" ]; then  # the latest intermediate weights
      split -b 15m -d "$RUN/out/ckpt.pt" "$OUT/ckpt.pt."
      log "ckpt.pt of $(date -u -r "$RUN/out/ckpt.pt" +%H:%M:%S) into $OUT as ckpt.pt.NN"
    fi
  fi
  return 0
}

case "${1:-}" in
  start)
    if [ -e "$RUN/STARTED" ] && [ ! -e "$RUN/DONE" ] && [ ! -e "$RUN/FAILED" ]; then
      log "a run is already going in $RUN; use poll"
      exit 1
    fi
    rm -rf "$RUN"
    mkdir -p "$RUN/src"
    cp -a "$HERE/." "$RUN/src/"
    if command -v setsid > /dev/null; then
      setsid nohup bash "$RUN/src/lease.sh" _run > "$RUN/lease.log" 2>&1 < /dev/null &
    else  # the same through Python's os.setsid
      nohup "$PYTHON" -c 'import os, sys; os.setsid(); os.execvp("bash", ["bash"] + sys.argv[1:])' \
        "$RUN/src/lease.sh" _run > "$RUN/lease.log" 2>&1 < /dev/null &
    fi
    echo $! > "$RUN/pid"
    sleep "${START_WAIT:-20}"
    log "started (pid $(cat "$RUN/pid")); first lines of $RUN/lease.log:"
    head -n 30 "$RUN/lease.log"
    ;;
  _run)
    run
    ;;
  poll)
    poll
    ;;
  finish)  # training ends at its next step; evaluation and export follow as usual
    touch "$RUN/STOP"
    log "asked the run to finish early ($RUN/STOP)"
    poll
    ;;
  export)  # a second try at the export, in the foreground (about a minute)
    rm -f "$RUN/FAILED" "$RUN/DONE"
    (stage export do_export
     echo "done (export again) at $(date -u +%FT%TZ)" > "$RUN/DONE") >> "$RUN/lease.log" 2>&1
    tail -n 30 "$RUN/lease.log"
    poll
    ;;
  *)
    echo "usage: bash lease.sh start|poll|finish|export" >&2
    exit 2
    ;;
esac
