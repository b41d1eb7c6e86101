#!/usr/bin/env python3
"""An independent CPU check of a train_long.py checkpoint: the same held-out 1K sessions as
train_long.py's evaluation, scored through the contract's reference path instead of the
training machinery (gist_mask.insert_gists / stream_targets / visibility: a dense mask,
stream order, fp32, no flex, no key reordering, no cached tables).

    python3 training/check_pilot.py --ckpt training/out/pilot/ckpt.pt --sessions 12

Runs where `tokenizers` is missing: pybpe.py reads tokenizer-digits.json (its ids are first
compared with the C++ tokenizer when /tmp/tokcheck exists, and with bench.json's pieces).
"""
import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gist_mask  # noqa: E402
import model as model_lib  # noqa: E402
import pybpe  # noqa: E402
import train_long  # noqa: E402

MODES = {"full": (0, None), "r4": (4, 64), "r8": (8, 64), "r16": (16, 64), "window": (0, 64)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, default=HERE / "tokenizer-digits.json")
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--sessions", type=int, default=12)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    tok = pybpe.PyBPE(args.tokenizer)
    bench = HERE / "logs/pilot-2026-12-02/bench.json"
    if bench.exists():
        b = json.loads(bench.read_text())["tokenizer"]
        assert [tok.id_to_token(i) for i in tok.encode(b["text"]).ids] == b["pieces"]
    docs = [json.loads(line) for line in gzip.open(args.data / "corpus.jsonl.gz", "rt")]
    lists = json.loads((args.data / "lists.json").read_text())
    specials = {k: tok.token_to_id(k) for k in ("<|begin_of_text|>", "<|end_of_text|>",
                                                 "<|gist|>")}
    train_long._W.update(tok=tok, docs=[d for d in docs if d["split"] == "eval"], lists=lists,
                         prose=np.zeros(10 ** 6, np.int32), bos=specials["<|begin_of_text|>"])
    # the first 1K held-out sessions of train_long.py (set 0: seeds 10**9 + j)
    rows = [train_long.gen_rows((10 ** 9 + j, args.n, 1, (0.1, 0.6), 0.0))[0]
            for j in range(args.sessions)]
    if Path("/tmp/tokcheck").exists():  # the C++ tokenizer on the same texts
        import recall
        import random
        for j in range(min(3, args.sessions)):
            rng = random.Random(10 ** 9 + j)
            rng.random()
            session = recall.Session(train_long._W["docs"], lists, rng)
            msgs = session.messages(args.n, rng.uniform(0.1, 0.6))
            text, _ = recall.render(msgs)
            cpp = [int(x) for x in subprocess.run(["/tmp/tokcheck", str(args.tokenizer), text],
                                                  capture_output=True, text=True).stdout.split()]
            assert cpp == tok.encode(text).ids, f"session {j}: C++ ids differ"
        print("pybpe ids = C++ tokenizer ids on 3 held-out session texts")

    ck = torch.load(args.ckpt, map_location="cpu")
    config = model_lib.ModelConfig(**ck["config"])
    model = model_lib.GistLlama(config)
    model.load_state_dict({k: v.float() for k, v in ck["model"].items()})
    model.eval()
    gist_id = specials["<|gist|>"]
    results = {}
    for name, (ratio, window) in MODES.items():
        t0 = time.time()
        exact = total = 0
        for ids, values, _ in rows:
            raw = torch.from_numpy(ids.astype(np.int64))
            stream, is_gist, raw_pos = gist_mask.insert_gists(raw, ratio, gist_id)
            labels = gist_mask.stream_targets(raw, raw_pos, len(stream))
            vals = gist_mask.stream_targets(torch.from_numpy(values.astype(np.int64)), raw_pos,
                                            len(stream), fill=0)
            mask = gist_mask.visibility(is_gist[None], len(stream) + 1 if window is None
                                        else window, 4)
            with torch.no_grad():
                logits = model(stream[None], mask)[0]
            right = logits.argmax(-1) == labels
            for v in vals[vals > 0].unique().tolist():
                total += 1
                exact += int(right[vals == v].all())
        results[name] = {"value_exact": exact / max(total, 1), "answers": total}
        print(f"{name:7s} value_exact {exact / max(total, 1):.3f} ({exact}/{total}) "
              f"[{time.time() - t0:.0f}s]", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"sessions": args.sessions, "raw_tokens": args.n,
                                        "path": "gist_mask.visibility, fp32, CPU",
                                        "results": results}, indent=1))


if __name__ == "__main__":
    main()
