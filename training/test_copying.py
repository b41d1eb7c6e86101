#!/usr/bin/env python3
"""CPU checks of copying.py and of recall.Session with generic facts (numpy; no torch):

    python3 training/test_copying.py

- every mark's value is at its offset in its row (statements, tables, JSON, documents,
  assistant replies, updates, answers);
- sessions (generic_share 1.0 and 0.5): every answer's value is the value of the fact's
  latest statement before it, appears verbatim in the context before the question, and is
  not inside the question; the labels (answer value index, distance) decode back to the
  stated value at the recorded distance; rows have exactly n raw tokens; same seed, same row;
- disjoint from bench/recall_heldout.py: check_disjoint with this module and its key parts,
  and no literal fragment of 3+ words of a held-out template occurs in 2000 generated
  training sessions' worth of statements, questions and answers.
"""
import gzip
import json
import random
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "bench")]
import copying  # noqa: E402
import dialogues  # noqa: E402
import recall  # noqa: E402
import tokenizer as tokenizer_lib  # noqa: E402

LISTS = {"female": ["Ada", "Mira", "Lena"], "male": ["Olaf", "Tomas", "Ravi"],
         "states": ["Ohio", "Utah"]}


def test_marks():
    m = copying.Maker(random.Random(0), ["lantern", "apple", "quiet", "river"],
                      LISTS["female"], LISTS["states"])
    text = "The first sentence. A second one! And a third? The end of it. " * 20
    for i in range(3000):
        key = m.key()
        v, _ = m.value()
        for t, off in (m.statement(key, v), m.answer(key, v), m.update(key, v, "OLD")):
            assert t[off:off + len(v)] == v, (t, v, off)
        style = copying.STYLES[i % len(copying.STYLES)]
        facts = [(j, m.key(), m.value()[0]) for j in range(1 if style == "assist" else 3)]
        msgs = copying.state_group(m, facts, style, lambda n: text[:n])
        marks = [mk for _, _, marks in msgs for mk in marks or []]
        assert sorted(mk[1] for mk in marks) == [f[0] for f in facts], (style, marks)
        for role, content, marks in msgs:
            for kind, fid, value, row, off in marks or []:
                assert row in content and row[off:off + len(value)] == value, (style, row)
    print("copying marks ok")


def load_docs(data=HERE / "data", count=200):
    if (data / "corpus.jsonl.gz").exists():
        docs = [json.loads(line) for line in gzip.open(data / "corpus.jsonl.gz", "rt")]
        return docs[:count], json.loads((data / "lists.json").read_text())
    rng = random.Random(5)
    words = "the of river a lantern north report measured quietly and seven. It".split()
    return ([{"text": " ".join(rng.choice(words) for _ in range(3000))} for _ in range(8)],
            LISTS)


def check_session(docs, lists, seed, n, share, generic):
    tok = tokenizer_lib.ByteTokenizer()
    session = recall.Session(docs, lists, random.Random(seed), chars_per_token=1.0,
                             generic_share=generic)
    msgs = session.messages(n, share)
    text, marks = recall.render(msgs)
    # text level: every answer is the latest statement's value, stated before the question
    latest, answers = {}, 0
    for kind, fid, a, b in marks:
        if kind == "state":
            latest[fid] = text[a:b]
            continue
        value = text[a:b]
        assert latest.get(fid) == value, (fid, latest.get(fid), value)
        q_start = text.rindex("<|start_header_id|>user", 0, a)
        question = text[q_start:text.index("<|eot_id|>", q_start)]
        assert value in text[:q_start], value
        assert not re.search(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])",
                             question), (value, question)
        answers += 1
    # token level: the rows the trainer reads
    session = recall.Session(docs, lists, random.Random(seed), chars_per_token=1.0,
                             generic_share=generic)
    ids, values, dist = recall.make_row(tok, session, n, share)
    again = recall.make_row(tok, recall.Session(docs, lists, random.Random(seed),
                                                chars_per_token=1.0, generic_share=generic),
                            n, share)
    assert all(np.array_equal(x, y) for x, y in zip((ids, values, dist), again)), "deterministic"
    assert len(ids) == len(values) == len(dist) == n
    raw = bytes(int(i) - 6 if i >= 6 else 32 for i in ids).decode("utf-8", "replace")
    index = sorted(int(v) for v in np.unique(values[values > 0]))
    assert index == list(range(1, len(index) + 1)), "answers numbered 1.. in order"
    for v in index:
        sel = np.nonzero(values == v)[0]
        assert np.all(np.diff(sel) == 1), "one contiguous span per answer"
        d = int(dist[sel[0]])
        assert d > 0 and np.all(dist[sel] == d)
        got = bytes(int(ids[i]) - 6 for i in sel).decode("utf-8", "replace")
        before = bytes(int(i) - 6 for i in ids[sel[0] - d:sel[0] - d + len(sel)]).decode(
            "utf-8", "replace")
        assert got == before, (got, before)
        assert got in {text[a:b] for k, _, a, b in marks if k == "answer"}, got
    assert np.all(dist[values == 0] == 0)
    return answers, len(index), float((values > 0).mean())


def test_sessions():
    docs, lists = load_docs()
    total = 0
    for seed in range(12):
        n = [1024, 2048, 4096, 16384][seed % 4]
        generic = 1.0 if seed % 2 == 0 else 0.5
        a, labelled, share = check_session(docs, lists, seed, n, 0.3 + 0.05 * seed, generic)
        assert labelled > 0
        total += labelled
    print(f"copying sessions ok: {total} labelled answers in 12 rows")


def test_disjoint():
    import recall_heldout as heldout
    nouns = ([a for a, _ in recall.ENTITY_ATTRS] + list(dialogues.CODE_THINGS)
             + copying.ATTRIBUTES + copying.OBJECTS)
    bad = heldout.check_disjoint([dialogues, recall, copying], nouns)
    assert not bad, bad
    # no fragment of 3+ words of a held-out template in generated training text
    frags = set()
    for t in heldout.templates():
        for part in re.split(r"\{[^}]*\}", t):
            part = re.sub(r"\s+", " ", part.strip(" .,:;!?=").lower())
            if len(part.split()) >= 3:
                frags.add(part)
    m = copying.Maker(random.Random(1), ["lantern", "apple"], LISTS["female"], LISTS["states"])
    text = []
    for _ in range(20000):
        key = m.key()
        v, _ = m.value()
        text += [m.statement(key, v)[0], m.question(key), m.answer(key, v)[0],
                 m.update(key, v, "x")[0]]
    blob = re.sub(r"\s+", " ", " \n ".join(text).lower())
    hits = [f for f in frags if f in blob]
    assert not hits, hits
    print(f"copying disjoint ok ({len(frags)} held-out fragments of 3+ words absent)")


if __name__ == "__main__":
    test_marks()
    test_sessions()
    test_disjoint()
