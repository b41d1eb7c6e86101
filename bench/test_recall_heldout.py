#!/usr/bin/python3
"""CPU checks of bench/recall_heldout.py (no data, no server): its templates and fact nouns
are not training's, and every generated conversation states each fact once before its
question, in the format recall_eval.split_dialogue reads, at about the asked length."""
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "training")]

import copying  # noqa: E402
import dialogues  # noqa: E402
import recall  # noqa: E402
import recall_heldout as heldout  # noqa: E402


def main():
    nouns = ([a for a, _ in recall.ENTITY_ATTRS] + list(dialogues.CODE_THINGS)
             + copying.ATTRIBUTES + copying.OBJECTS)
    bad = heldout.check_disjoint([dialogues, recall, copying], nouns)
    assert not bad, bad
    rng = random.Random(5)
    words = "the of river a lantern north report measured quietly and seven".split()
    docs = [{"text": " ".join(rng.choice(words) for _ in range(2000)), "split": "eval"}
            for _ in range(5)]
    lists = {"female": ["Ada", "Mira"], "male": ["Olaf", "Tomas"], "states": ["Ohio"]}
    for tokens in (1000, 4000, 12000):
        gen = heldout.Generator(docs, lists, random.Random(tokens), tokens)
        for _ in range(5):
            msgs = gen.dialogue()
            body = [m for m in msgs if m["role"] != "system"]
            first_q = next(i for i, m in enumerate(body) if "value" in m) - 1
            context, tail = body[:first_q], body[first_q:]
            stated = [f for m in context for f in m.get("facts", [])]
            asked = [m["fact_id"] for m in tail if "value" in m]
            assert sorted(stated) == sorted(asked) == list(range(len(asked))), (stated, asked)
            for m in tail[1::2]:
                where = [c["content"] for c in context if m["fact_id"] in c.get("facts", [])]
                assert len(where) == 1 and m["value"] in where[0] and m["value"] in m["content"]
            est = sum(len(m["content"]) for m in context) / heldout.CHARS_PER_TOKEN
            assert 0.8 * tokens < est < 1.25 * tokens, (tokens, est)
            roles = [m["role"] for m in body]
            assert all(a != b for a, b in zip(roles, roles[1:])), "roles alternate"
    print("recall_heldout: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
