"""Tokenized data and the batches of gist streams that training and evaluation read.

Every row of a batch is one session of its own mode (full, r2, r4 or r8: ratios mixed per
sequence) laid out by gist_mask.py and padded to the same stream length T, so rows of all
modes share a batch. A row's raw tokens are either prose (a window of the concatenated
documents, after <|begin_of_text|>) or one generated dialogue (padded at the end).
"""
import gzip
import json
import multiprocessing
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import dialogues
import gist_mask
import tokenizer as tokenizer_lib


@dataclass
class Dialogue:
    ids: np.ndarray     # raw token ids, from <|begin_of_text|> on
    values: np.ndarray  # int8 per token: 0, or the 1-based index of its answer value


@dataclass
class Split:
    prose: np.ndarray   # documents' tokens, each document followed by <|end_of_text|>
    dialogues: list


def tokenize_dialogues(tok, rendered):
    """rendered: [(text, value spans)] -> [Dialogue]; value tokens found by char offsets."""
    out = []
    encodings = tok.encode_batch([text for text, _ in rendered], add_special_tokens=False)
    for (text, spans), enc in zip(rendered, encodings):
        ids = np.asarray(enc.ids, dtype=np.int32)
        values = np.zeros(len(ids), dtype=np.int8)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        for index, (a, b) in enumerate(spans, start=1):
            values[(offsets[:, 0] < b) & (offsets[:, 1] > a)] = index
        out.append(Dialogue(ids, values))
    return out


CHUNK = 2000  # dialogues per work item; each item has its own seed, so the result is the
_WORK = {}    # same for any number of workers. _WORK reaches forked workers by inheritance.


def _dialogue_chunk(item):
    seed, count = item
    gen = dialogues.Generator(_WORK["docs"], _WORK["lists"], random.Random(seed),
                              max_chars=_WORK["chars"])
    return tokenize_dialogues(_WORK["tok"], [dialogues.render(gen.dialogue())
                                             for _ in range(count)])


def make_dialogues(tok, docs, lists, count: int, seed: int, chars, workers: int):
    """`count` generated dialogues, tokenized; in `workers` forked processes when > 1 (the
    Python side of generation and offsets is the slow part, not the tokenizer)."""
    items = [(seed * 100003 + i, min(CHUNK, count - at))
             for i, at in enumerate(range(0, count, CHUNK))]
    _WORK.update(tok=tok, docs=docs, lists=lists, chars=chars)
    if workers > 1 and len(items) > 1:
        with multiprocessing.get_context("fork").Pool(min(workers, len(items))) as pool:
            parts = pool.map(_dialogue_chunk, items)
    else:
        parts = [_dialogue_chunk(item) for item in items]
    _WORK.clear()
    return [d for part in parts for d in part]


def load_split(data: Path, tok, split: str, n_dialogues: int, seed: int,
               dialogue_chars=(1700, 3300), workers: int = 1) -> Split:
    docs = [json.loads(line) for line in gzip.open(data / "corpus.jsonl.gz", "rt")]
    docs = [d for d in docs if d["split"] == split]
    specials = tokenizer_lib.special_ids(tok)
    eos = specials[tokenizer_lib.EOS]
    parts = []
    for enc in tok.encode_batch([d["text"] for d in docs], add_special_tokens=False):
        parts.append(np.asarray(enc.ids + [eos], dtype=np.int32))
    lists = json.loads((data / "lists.json").read_text())
    chats = make_dialogues(tok, docs, lists, n_dialogues, seed, dialogue_chars, workers)
    return Split(np.concatenate(parts), chats)


@dataclass
class Batch:
    ids: torch.Tensor       # [B, T] stream ids
    is_gist: torch.Tensor   # [B, T] bool
    labels: torch.Tensor    # [B, T] next raw token, IGNORE elsewhere
    values: torch.Tensor    # [B, T] answer-value index of the target, 0 elsewhere
    far: torch.Tensor       # [B, T] bool: the target's raw index is past sink + window
    window: torch.Tensor    # [B] visible raw window (T + 1 = unlimited)
    mode: torch.Tensor      # [B] index into the mode list

    def to(self, device):
        return Batch(*(t.to(device, non_blocking=True) for t in (
            self.ids, self.is_gist, self.labels, self.values, self.far, self.window,
            self.mode)))


class Layout:
    """Turns raw token rows into stream rows of length T for a mode."""

    def __init__(self, seq_len: int, gist_id: int, pad_id: int, sink: int, window: int):
        self.t, self.gist_id, self.pad_id = seq_len, gist_id, pad_id
        self.sink, self.window = sink, window

    def row(self, raw: np.ndarray, valid: np.ndarray, values: np.ndarray, mode):
        raw_t = torch.from_numpy(raw.astype(np.int64))
        stream, is_gist, raw_pos = gist_mask.build_stream(raw_t, mode, self.gist_id)
        n, t = stream.shape[0], self.t
        assert n <= t, (n, t)
        ids = torch.full((t,), self.pad_id, dtype=torch.long)
        ids[:n] = stream
        gist = torch.zeros(t, dtype=torch.bool)
        gist[:n] = is_gist
        targets = torch.where(torch.from_numpy(valid), raw_t, gist_mask.IGNORE)
        labels = gist_mask.stream_targets(targets, raw_pos, t)
        value = gist_mask.stream_targets(torch.from_numpy(values.astype(np.int64)), raw_pos, t,
                                         fill=0)
        index = torch.arange(raw.shape[0])
        far = gist_mask.stream_targets(index >= self.sink + self.window, raw_pos, t,
                                       fill=False)
        return ids, gist, labels, value, far


def stack(rows, windows, mode_index) -> Batch:
    cols = list(zip(*rows))
    return Batch(*(torch.stack(c) for c in cols), torch.tensor(windows),
                 torch.tensor(mode_index))


class Sampler:
    """Random training batches: each row draws its mode and its source."""

    def __init__(self, split: Split, layout: Layout, modes, weights, dialogue_share: float,
                 bos_id: int, seed: int):
        self.split, self.layout, self.modes = split, layout, modes
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.dialogue_share, self.bos_id = dialogue_share, bos_id
        self.rng = np.random.default_rng(seed)

    def raw_row(self, n: int):
        """(raw ids, valid-target mask, value index) of n raw tokens."""
        if self.rng.random() < self.dialogue_share:
            # A dialogue that fits whole (its questions come last); a few tries, then cut.
            for _ in range(8):
                d = self.split.dialogues[self.rng.integers(len(self.split.dialogues))]
                if len(d.ids) <= n:
                    break
            raw = np.full(n, self.layout.pad_id, dtype=np.int32)
            values = np.zeros(n, dtype=np.int32)
            m = min(n, len(d.ids))
            raw[:m], values[:m] = d.ids[:m], d.values[:m]
            valid = np.arange(n) < m
            return raw, valid, values
        prose = self.split.prose
        start = self.rng.integers(len(prose) - n)
        raw = np.concatenate([[self.bos_id], prose[start:start + n - 1]]).astype(np.int32)
        return raw, np.ones(n, dtype=bool), np.zeros(n, dtype=np.int32)

    def batch(self, size: int) -> Batch:
        rows, windows, chosen = [], [], []
        for _ in range(size):
            k = self.rng.choice(len(self.modes), p=self.weights)
            mode = self.modes[k]
            n = gist_mask.raw_budget(self.layout.t, mode.ratio)
            rows.append(self.layout.row(*self.raw_row(n), mode))
            windows.append(gist_mask.window_value(mode, self.layout.t + 1))
            chosen.append(k)
        return stack(rows, windows, chosen)


def eval_rows(split: Split, count: int, n: int, bos_id: int, pad_id: int, seed: int):
    """Fixed held-out raw rows, the same for every mode so the modes compare on the same
    targets: `count` prose windows and `count` dialogues, each n raw tokens."""
    rng = np.random.default_rng(seed)
    prose = []
    for start in rng.choice(len(split.prose) - n, size=count, replace=False):
        raw = np.concatenate([[bos_id], split.prose[start:start + n - 1]]).astype(np.int32)
        prose.append((raw, np.ones(n, dtype=bool), np.zeros(n, dtype=np.int32)))
    chats = []
    for d in [d for d in split.dialogues if len(d.ids) <= n][:count]:  # whole dialogues
        m = min(n, len(d.ids))
        raw = np.full(n, pad_id, dtype=np.int32)
        values = np.zeros(n, dtype=np.int32)
        raw[:m], values[:m] = d.ids[:m], d.values[:m]
        chats.append((raw, np.arange(n) < m, values))
    return prose, chats
