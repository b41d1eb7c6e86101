#!/usr/bin/env bash
# One run on the GPU machine, from the repository root: train, export, write the fixtures,
# then bundle what comes back under $OUT (run.log and bundle.tar.NN, parts of <= 15 MiB).
#   OUT=/tmp/out DEADLINE=470 bash training/run_gpu.sh
# Needs training/data/corpus.jsonl.gz and training/data/lists.json (training/data.py).
# DEADLINE (seconds after train.py starts) ends the optimisation early enough that the whole
# script fits the device tool's 600 s per command.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gistmem-out}
mkdir -p "$OUT"
{
  date -u +"run started %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, transformers, tokenizers, safetensors; print('python',
    sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__,
    'tokenizers', tokenizers.__version__, 'safetensors', safetensors.__version__)"
  (cd training && python3 train.py --tokenizer tokenizer.json --out out --attn flex --compile \
      --minutes "${MINUTES:-7}" --deadline "${DEADLINE:-470}") &&
  (cd training && python3 export.py --ckpt out/ckpt.pt --tokenizer tokenizer.json \
      --out ../models/gistmem-tiny --fixtures ../tests/fixtures/gistmem-tiny)
  echo "exit status $?"
  date -u +"run ended %Y-%m-%dT%H:%M:%SZ"
} 2>&1 | tee "$OUT/run.log"
tar cf - $(ls -d models/gistmem-tiny tests/fixtures/gistmem-tiny training/out 2>/dev/null) |
  split -b 15m -d - "$OUT/bundle.tar."
ls -l "$OUT"
