"""A pure-Python reader of this project's byte-level BPE tokenizer.json, for machines without
Hugging Face `tokenizers` (the developer machine): the split regex, ByteLevel, BPE with
ignore_merges, and the special tokens. Gives ids and character offsets like
tokenizers.Tokenizer.encode for the texts the recipe makes (checked against the C++ tokenizer
and against the ids that `tokenizers` gave on the GPU machine; see check_pilot.py).
Needs the `regex` module (Debian python3-regex) for \\p{L} and \\p{N}.
"""
import json
import re

import regex


def _byte_map():
    """GPT-2's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class Encoding:
    def __init__(self, ids, offsets):
        self.ids, self.offsets = ids, offsets


class PyBPE:
    def __init__(self, path):
        d = json.load(open(path))
        self.vocab = d["model"]["vocab"]
        self.inv = {i: t for t, i in self.vocab.items()}
        self.ranks = {tuple(m if isinstance(m, list) else m.split(" ")): i
                      for i, m in enumerate(d["model"]["merges"])}
        self.ignore_merges = d["model"].get("ignore_merges", False)
        steps = d["pre_tokenizer"]["pretokenizers"]
        self.split = regex.compile(steps[0]["pattern"]["Regex"])
        self.specials = {t["content"]: t["id"] for t in d["added_tokens"]}
        for t in d["added_tokens"]:
            self.inv[t["id"]] = t["content"]
        self.special_re = re.compile("(" + "|".join(re.escape(s) for s in self.specials) + ")")
        self.bytemap = _byte_map()
        self.cache = {}

    def token_to_id(self, token):
        return self.specials.get(token, self.vocab.get(token))

    def id_to_token(self, i):
        return self.inv[i]

    def get_vocab_size(self):
        return len(self.inv)

    def _bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        if self.ignore_merges and word in self.vocab:
            out = [word]
        else:
            parts = list(word)
            while len(parts) > 1:
                best = min(((self.ranks.get((a, b), 1 << 30), i)
                            for i, (a, b) in enumerate(zip(parts, parts[1:]))))
                if best[0] == 1 << 30:
                    break
                i = best[1]
                parts[i:i + 2] = [parts[i] + parts[i + 1]]
            out = parts
        self.cache[word] = out
        return out

    def encode(self, text, add_special_tokens=False):
        ids, offsets = [], []
        at = 0
        for piece in self.special_re.split(text):
            if not piece:
                continue
            if piece in self.specials:
                ids.append(self.specials[piece])
                offsets.append((at, at + len(piece)))
                at += len(piece)
                continue
            for m in self.split.finditer(piece):
                chunk = m.group(0)
                # byte -> char index inside the chunk
                char_of_byte = []
                mapped = []
                for ci, ch in enumerate(chunk):
                    for b in ch.encode("utf-8"):
                        char_of_byte.append(ci)
                        mapped.append(self.bytemap[b])
                word = "".join(mapped)
                pos = 0
                base = at + m.start()
                for tok in self._bpe(word):
                    n = len(tok)
                    ids.append(self.vocab[tok])
                    offsets.append((base + char_of_byte[pos], base + char_of_byte[pos + n - 1] + 1))
                    pos += n
            at += len(piece)
        return Encoding(ids, offsets)

    def encode_batch(self, texts, add_special_tokens=False):
        return [self.encode(t) for t in texts]
