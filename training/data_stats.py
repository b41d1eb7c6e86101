#!/usr/bin/env python3
"""Diversity of the recall data, recall.py's own facts against copying.py's (CPU, minutes):

    python3 training/data_stats.py [--facts 10000] [--tokenizer tokenizer-digits.json]

Facts: distinct keys (the noun phrase a question names), distinct frames (statement, question
and answer with key and value replaced by {K} and {V}), value shapes (characters mapped to
A/a/9, runs collapsed: "RHG.WPR.R" -> "A.A.A"), distinct values, and the share of facts whose
value is one of the values that occur 10+ times (a value a model can guess from its kind).
Rows: the share of raw tokens that are answer values (the tokens the answer weight acts on),
answers per row and the median distance, at the two phases of train_long.py's curriculum.
"""
import argparse
import gzip
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import copying  # noqa: E402
import recall  # noqa: E402


def shape(v):
    s = re.sub(r"[A-Z]", "A", re.sub(r"[a-z]", "a", re.sub(r"[0-9]", "9", v)))
    return re.sub(r"(.)\1+", r"\1", s)


def skeleton(text, value, keys):
    text = text.replace(value, "{V}")
    for k in sorted(keys, key=len, reverse=True):
        text = text.replace(k, "{K}").replace(k[:1].upper() + k[1:], "{K}")
    return text


def old_facts(session, n):
    r = session.rng
    out = []
    while len(out) < n:
        session.used = set()
        for _ in range(40):
            if r.random() < 0.55:
                attr, kind = r.choice(recall.ENTITY_ATTRS)
                st, q, a, v = session._record(attr, kind)
                m = re.match(r"(?:What is the .* of |What was |Look up the .* for |Which .* does |"
                             r"Remind me of the .* of )(.*?)(?:'s .*|\?| have\?|\.)$", q)
                ent = m.group(1) if m else q
                keys = [ent, attr]
                key, noun = f"{ent} / {attr}", attr
            else:
                st, q, a, v = session._personal()
                thing = next((t for t in session.used if isinstance(t, str) and t in q + st),
                             q)
                noun = thing
                keys, key = [thing], re.sub(r"^(What is my |Can you remind me of my |.*my )", "",
                                            q).rstrip("?. ")
            out.append((key, v, skeleton(st, v, keys), skeleton(q, v, keys),
                        skeleton(a, v, keys), noun))
    return out[:n]


def new_facts(maker, n):
    out = []
    for _ in range(n):
        key = maker.key()
        v, _ = maker.value()
        forms = key.forms()
        out.append((key.text("user", 0), v, skeleton(maker.statement(key, v)[0], v, forms),
                    skeleton(maker.question(key), v, forms),
                    skeleton(maker.answer(key, v)[0], v, forms), (key.obj, key.attr)))
    return out


def diversity(facts):
    values = Counter(f[1] for f in facts)
    common = {v for v, c in values.items() if c >= 10}
    return {"facts": len(facts), "keys": len({f[0] for f in facts}),
            "key nouns (attribute, object)": len({f[5] for f in facts}),
            "statement frames": len({f[2] for f in facts}),
            "question frames": len({f[3] for f in facts}),
            "answer frames": len({f[4] for f in facts}),
            "value shapes": len({shape(f[1]) for f in facts}),
            "distinct values": len(values),
            "guessable values": round(sum(f[1] in common for f in facts) / len(facts), 3),
            "top value": values.most_common(1)[0]}


def rows(tok, docs, lists, generic, n, share, count, seed=0):
    answers, tokens, values_tok, dists = 0, 0, 0, []
    for i in range(count):
        rng = random.Random(seed * 1000 + i)
        session = recall.Session(docs, lists, rng, generic_share=generic)
        ids, values, dist = recall.make_row(tok, session, n, rng.uniform(*share))
        k = len(np.unique(values[values > 0]))
        answers += k
        tokens += len(ids)
        values_tok += int((values > 0).sum())
        for v in np.unique(values[values > 0]):
            dists.append(int(dist[values == v][0]))
    return {"rows": count, "answers/row": round(answers / count, 1),
            "answer-token share": round(values_tok / tokens, 4),
            "median distance": int(np.median(dists)) if dists else None}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--facts", type=int, default=10000)
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--tokenizer", default=str(HERE / "tokenizer-digits.json"),
                   help="tokenizer.json (read by pybpe.py) or 'bytes'")
    p.add_argument("--rows", default="2048:0.5-0.95:24,16384:0.1-0.5:4")
    p.add_argument("--generic", default="0,0.7,1")
    args = p.parse_args()
    docs = [json.loads(line) for line in gzip.open(args.data / "corpus.jsonl.gz", "rt")]
    docs = [d for d in docs if d["split"] == "train"][:400]
    lists = json.loads((args.data / "lists.json").read_text())
    session = recall.Session(docs, lists, random.Random(1))
    print("recall.py facts (gistmem-16k's data):", json.dumps(diversity(old_facts(session,
                                                                                  args.facts))))
    maker = recall.Session(docs, lists, random.Random(2), generic_share=1.0).maker
    print("copying.py facts:", json.dumps(diversity(new_facts(maker, args.facts))),
          flush=True)
    if args.tokenizer == "bytes":
        import tokenizer as tokenizer_lib
        tok = tokenizer_lib.ByteTokenizer()
    else:
        import pybpe
        tok = pybpe.PyBPE(args.tokenizer)
    for part in args.rows.split(","):
        n, share, count = part.split(":")
        lo, hi = (float(x) for x in share.split("-"))
        for g in args.generic.split(","):
            print(f"rows n={n} fact share {lo}-{hi} generic share {g}:",
                  json.dumps(rows(tok, docs, lists, float(g), int(n), (lo, hi), int(count))),
                  flush=True)


if __name__ == "__main__":
    main()
