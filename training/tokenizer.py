#!/usr/bin/env python3
"""The tokenizer of gistmem's small model: a Llama-3-style byte-level BPE.

    python3 training/tokenizer.py --data training/data --out training/out/tokenizer.json

Llama-3's pre-tokenizer (the Split regex, then ByteLevel without its own regex) so that the
C++ tokenizer, which is tested against the real Llama-3 file, reads this one the same way.
Special tokens come first (ids 0..5): the Llama-3 chat tokens and the gist token.
Needs Hugging Face `tokenizers` (the GPU machine has it; this machine does not).
"""
import argparse
import gzip
import json
import random
import re
from pathlib import Path

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BOS, EOT, EOS = "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"
START_HEADER, END_HEADER, GIST = "<|start_header_id|>", "<|end_header_id|>", "<|gist|>"
SPECIALS = [BOS, EOS, START_HEADER, END_HEADER, EOT, GIST]
VOCAB_SIZE = 8192  # small vocabulary: the embedding and head stay a small part of the model


def train(texts, vocab_size: int = VOCAB_SIZE):
    import tokenizers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def load(path):
    """A tokenizers.Tokenizer from tokenizer.json; "bytes" gives ByteTokenizer (smoke tests)."""
    if str(path) == "bytes":
        return ByteTokenizer()
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(path))


class ByteTokenizer:
    """A stand-in with the few methods of tokenizers.Tokenizer that training uses: specials
    first, then one token per UTF-8 byte. For smoke tests where `tokenizers` is missing."""

    class Encoding:
        def __init__(self, ids, offsets):
            self.ids, self.offsets = ids, offsets

    def token_to_id(self, token):
        return SPECIALS.index(token) if token in SPECIALS else None

    def get_vocab_size(self):
        return len(SPECIALS) + 256

    def encode(self, text, add_special_tokens=False):
        ids, offsets, at = [], [], 0
        pieces = re.split("(" + "|".join(re.escape(t) for t in SPECIALS) + ")", text)
        for piece in pieces:
            if piece in SPECIALS:
                ids.append(SPECIALS.index(piece))
                offsets.append((at, at + len(piece)))
            else:
                for i, ch in enumerate(piece):
                    for byte in ch.encode("utf-8"):
                        ids.append(len(SPECIALS) + byte)
                        offsets.append((at + i, at + i + 1))
            at += len(piece)
        return ByteTokenizer.Encoding(ids, offsets)

    def encode_batch(self, texts, add_special_tokens=False):
        return [self.encode(t) for t in texts]


def special_ids(tok) -> dict:
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens {missing}")
    return ids


def training_texts(data: Path, dialogue_sample: int = 3000):
    """The train split of the corpus plus some rendered dialogues, so that chat phrasing and
    the facts' vocabulary (names, codes) get merges too."""
    import dialogues  # same folder
    docs = [json.loads(line) for line in gzip.open(data / "corpus.jsonl.gz", "rt")]
    train_docs = [d for d in docs if d["split"] == "train"]
    texts = [d["text"] for d in train_docs]
    gen = dialogues.Generator(train_docs, json.loads((data / "lists.json").read_text()),
                              random.Random(7))
    for _ in range(dialogue_sample):
        texts.append(dialogues.render(gen.dialogue())[0])
    return texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab", type=int, default=VOCAB_SIZE)
    args = parser.parse_args()
    tok = train(training_texts(args.data), args.vocab)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out))
    print(f"tokenizer: {tok.get_vocab_size()} tokens, specials {special_ids(tok)} -> {args.out}")


if __name__ == "__main__":
    main()
