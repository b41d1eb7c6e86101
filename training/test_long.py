#!/usr/bin/env python3
"""Checks of the long-context recipe that need no GPU (torch + numpy only):

    python3 training/test_long.py

- flexmask: the reordered-key mask_mod, put back in stream order, equals gist_mask.visibility
  for every mode (compact and interleaved keys), with padding past the stream;
- recall: sessions have exactly n raw tokens; every answer's value tokens decode to a value
  that was stated earlier in the session, at the recorded distance (recall.py's own facts,
  and with copying.py's at generic share 0.7; more in test_copying.py).
"""
import gzip
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import flexmask  # noqa: E402
import gist_mask  # noqa: E402
import recall  # noqa: E402
import tokenizer as tokenizer_lib  # noqa: E402


def test_flexmask():
    sink = 4
    for t in (37, 128, 300):
        for ratio, window in ((0, None), (0, 16), (2, 8), (4, 16), (8, 16), (16, 32), (4, 4)):
            for compact in (True, False):
                tab = flexmask.layout(t, ratio, window, sink, compact)
                want = gist_mask.visibility(tab["is_gist"][None],
                                            t + 1 if window is None else window, sink)[0]
                got = flexmask.dense_equivalent(tab, sink)
                assert torch.equal(got, want), (t, ratio, window, compact)
                assert flexmask.visible_pairs(tab, sink) == int(want.sum())
        # the layout is insert_gists' layout
        for ratio in (4, 8, 16):
            n = gist_mask.raw_budget(t, ratio)
            _, is_gist, _ = gist_mask.insert_gists(torch.arange(n), ratio, 5)
            tab = flexmask.layout(t, ratio, 64, sink)
            assert torch.equal(tab["is_gist"][:len(is_gist)], is_gist)
    print("flexmask ok")


def test_recall(data=HERE / "data"):
    if not (data / "corpus.jsonl.gz").exists():
        print("recall skipped (no training/data)")
        return
    docs = [json.loads(line) for line in gzip.open(data / "corpus.jsonl.gz", "rt")][:300]
    lists = json.loads((data / "lists.json").read_text())
    tok = tokenizer_lib.ByteTokenizer()
    answers, dists = 0, []
    for seed in range(6):
        session = recall.Session(docs, lists, random.Random(seed), chars_per_token=1.0,
                                 generic_share=0.7 if seed % 2 else 0.0)
        n = [1024, 4096, 16384][seed % 3]
        ids, values, dist = recall.make_row(tok, session, n, 0.3 + 0.1 * seed)
        assert len(ids) == n and len(values) == n
        text = bytes(int(i) - 6 for i in ids if i >= 6).decode("utf-8", "replace")
        for v in np.unique(values[values > 0]):
            sel = np.nonzero(values == v)[0]
            value = bytes(int(ids[i]) - 6 for i in sel).decode("utf-8", "replace")
            d = int(dist[sel[0]])
            assert d > 0
            before = bytes(int(i) - 6 for i in ids[sel[0] - d:sel[0] - d + len(sel)]).decode(
                "utf-8", "replace")
            assert before == value, (value, before)
            answers += 1
            dists.append(d)
    print(f"recall ok: {answers} answers, distances min {min(dists)} median "
          f"{int(np.median(dists))} max {max(dists)} (bytes)")
    print(text[:3000])


if __name__ == "__main__":
    test_flexmask()
    test_recall()
