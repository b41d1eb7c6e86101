#!/usr/bin/python3
"""Held-out prose loss per memory policy and ratio, on the C++ engine the service runs.

    bench/build_lm_loss.sh && /usr/bin/python3 bench/lm_loss_eval.py \
        --out bench/results/lm_loss.json

The gRPC service returns no logits (and this evaluation adds no RPC), so the loss is computed
by bench/lm_loss.cc, which drives the service's own memory and engine code: a fresh
memory::SessionMemory per row (the policy lays out gist tokens, frees and pools entries after
every step for real) and model::CpuTransformer::ForwardBatch in prompt chunks of
min(256, MaxChunkTokens) rows, as the scheduler reads a prompt.

Rows: the held-out prose rows of training/train.py, rebuilt the same way: the corpus's `eval`
documents in corpus order, each tokenized (the C++ tokenizer, which matches Hugging Face
`tokenizers`) and followed by <|end_of_text|>, concatenated; 128 windows chosen by
numpy.random.default_rng(1).choice(len - n, 128, replace=False), each <|begin_of_text|> + the
next n - 1 tokens, n = 1365 raw tokens (what fits an r=2 stream of 2048). Loss = mean
next-raw-token cross entropy over all raw targets (gist positions carry no label); far_loss
over targets past the first 68 raw tokens (sinks + window), where policies differ. These are
training's definitions (training/evaluate.py), so `full`, `gist r`, and `window W=64` here can
be checked against the PyTorch numbers in training/logs/metrics-2026-12-01.json (bf16 autocast
on a GPU there, fp32 here).
"""
import argparse
import datetime
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINKS, WINDOW = 4, 64
PYTORCH = os.path.join(ROOT, "training/logs/metrics-2026-12-01.json")


def budget(n, r):
    """Entries gist r (W=64, S=4) keeps after n raw tokens: S + floor(n/r) + W."""
    return SINKS + n // r + WINDOW


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="/tmp/gistmem-lm-loss/gistmem-lm-loss")
    ap.add_argument("--model", default=os.path.join(ROOT, "models/gistmem-16k"))
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--row-len", type=int, default=1365)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    n = args.row_len

    docs = [json.loads(line) for line in
            gzip.open(os.path.join(ROOT, "training/data/corpus.jsonl.gz"), "rt")]
    docs = [d["text"] for d in docs if d["split"] == "eval"]
    work = tempfile.mkdtemp(prefix="gistmem-lmloss-")
    texts = os.path.join(work, "texts.bin")
    with open(texts, "wb") as f:
        f.write(b"\0".join(d.encode("utf-8") for d in docs))
    prose_path = os.path.join(work, "prose.i32")
    tok = subprocess.run([args.binary, "tokenize", args.model, texts, prose_path],
                         check=True, capture_output=True, text=True)
    prose = np.fromfile(prose_path, dtype=np.int32)
    print(f"held-out prose: {tok.stdout.strip()}", file=sys.stderr)
    bos = 0  # <|begin_of_text|> (training/tokenizer.py: specials first)
    rng = np.random.default_rng(1)  # training/batches.py eval_rows(seed=args.seed=1)
    starts = rng.choice(len(prose) - n, size=args.rows, replace=False)
    rows = np.stack([np.concatenate([[bos], prose[s:s + n - 1]]).astype(np.int32)
                     for s in starts])
    rows_path = os.path.join(work, "rows.i32")
    rows.tofile(rows_path)

    specs = {
        "full": "full",
        "gist r=2": f"gist:2:{WINDOW}:{SINKS}",
        "gist r=4": f"gist:4:{WINDOW}:{SINKS}",
        "gist r=8": f"gist:8:{WINDOW}:{SINKS}",
        "pool r=4": f"pool:4:{WINDOW}:{SINKS}",
        "pool r=8": f"pool:8:{WINDOW}:{SINKS}",
        # Window at gist's budget at the end of a row (S + W' = S + n/r + W).
        "window @ gist r=4 budget": f"window:{budget(n, 4) - SINKS}:{SINKS}",
        "window @ gist r=8 budget": f"window:{budget(n, 8) - SINKS}:{SINKS}",
        "window W=64": f"window:{WINDOW}:{SINKS}",  # training's `window` baseline
    }
    started = time.time()
    proc = subprocess.run([args.binary, "loss", args.model, rows_path, str(n),
                           str(args.threads), *specs.values()],
                          check=True, capture_output=True, text=True)
    seconds = time.time() - started
    results = {}
    for name, line in zip(specs, proc.stdout.strip().splitlines()):
        results[name] = json.loads(line)
    torch_ref = json.load(open(PYTORCH))["held_out"]
    ref_names = {"full": "full", "gist r=2": "r2", "gist r=4": "r4", "gist r=8": "r8",
                 "window W=64": "window"}
    print("| policy | retained entries at row end (mean) | loss | far_loss | token acc | "
          "PyTorch loss | PyTorch far_loss |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        ref = torch_ref.get(ref_names.get(name, ""), {})
        pl = f"{ref['prose_loss']:.4f}" if ref else ""
        pf = f"{ref['prose_far_loss']:.4f}" if ref else ""
        print(f"| {name} ({r['describe']}) | {r['retained_at_end_mean']:.0f} | {r['loss']:.4f} | "
              f"{r['far_loss']:.4f} | {r['token_acc']:.3f} | {pl} | {pf} |")
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([sys.executable] + sys.argv), "rows": args.rows,
            "row_len": n, "prose_tokens": int(len(prose)), "first_starts": starts[:8].tolist(),
            "engine_seconds": seconds, "nproc": os.cpu_count()}
    print(json.dumps(meta), file=sys.stderr)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results,
                       "pytorch_reference": {k: torch_ref[v] for k, v in ref_names.items()}},
                      f, indent=1)


if __name__ == "__main__":
    main()
