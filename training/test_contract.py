#!/usr/bin/env python3
"""Checks of gist_mask.py against the contract's words, and of the model under it.

    python3 training/test_contract.py      (or pytest training/)  needs torch and numpy only

- the layout: a gist after every r raw tokens; positions are stream indices;
- visibility equals a literal, loop-by-loop reading of gist-method.md section 2;
- retention: once a raw key leaves the window it never comes back, so an engine that frees
  it loses nothing the mask would have shown;
- the masked forward over a whole stream equals token-by-token decoding with a cache that
  really drops the evicted entries (what the C++ engine does);
- labels: each raw token predicts the next raw token, gists predict nothing.
"""
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batches  # noqa: E402
import gist_mask  # noqa: E402
import model as model_lib  # noqa: E402

GIST = 99


def literal_visible(is_gist, q, k, sink, window):
    """Section 2, word by word."""
    if k > q:
        return False
    if k < sink or is_gist[k]:
        return True
    raw_so_far = [i for i in range(q + 1) if not is_gist[i]]
    return window is None or k in raw_so_far[-window:]


def test_layout():
    stream, is_gist, raw_pos = gist_mask.insert_gists(torch.arange(10), 4, GIST)
    assert stream.tolist() == [0, 1, 2, 3, GIST, 4, 5, 6, 7, GIST, 8, 9]
    assert is_gist.nonzero().flatten().tolist() == [4, 9]
    assert raw_pos.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11]
    stream, is_gist, _ = gist_mask.insert_gists(torch.arange(8), 4, GIST)
    assert stream.tolist()[-1] == GIST and len(stream) == 10  # a span ends with its gist
    stream, is_gist, _ = gist_mask.insert_gists(torch.arange(5), 0, GIST)
    assert stream.tolist() == [0, 1, 2, 3, 4] and not is_gist.any()
    for r in (2, 4, 8):
        for t in (7, 64, 1024):
            n = gist_mask.raw_budget(t, r)
            assert gist_mask.stream_length(n, r) <= t < gist_mask.stream_length(n + 1, r)


def test_visibility_matches_literal():
    rng = random.Random(0)
    for ratio, window, sink in [(2, 4, 4), (4, 8, 4), (8, 8, 2), (3, 6, 0), (0, 5, 4),
                                (0, None, 4), (8, None, 4)]:
        _, is_gist, _ = gist_mask.insert_gists(torch.zeros(rng.randint(20, 60)), ratio, GIST)
        t = is_gist.shape[0]
        w = window if window is not None else t + 1
        mask = gist_mask.visibility(is_gist[None], w, sink)[0]
        flags = is_gist.tolist()
        for q in range(t):
            for k in range(t):
                assert mask[q, k].item() == literal_visible(flags, q, k, sink, window), \
                    (ratio, window, sink, q, k)


def test_flex_mask_mod_restates_visibility():
    """The mask_mod that training hands flex_attention, called as flex calls it (per b, q, k)
    outside flex (torch 1.13 has none), against the dense mask."""
    _, g2, _ = gist_mask.insert_gists(torch.zeros(24), 2, GIST)
    _, g8, _ = gist_mask.insert_gists(torch.zeros(32), 8, GIST)
    is_gist = torch.stack([torch.cat([g2, torch.zeros(36 - g2.shape[0], dtype=torch.bool)]), g8])
    window = torch.tensor([6, 37])
    dense = gist_mask.visibility(is_gist, window, 4)
    mod = gist_mask.flex_mask_mod(gist_mask.raw_rank(is_gist), is_gist, window, 4)
    t = is_gist.shape[1]
    for b in range(2):
        got = torch.tensor([[bool(mod(torch.tensor(b), torch.tensor(0), torch.tensor(q),
                                      torch.tensor(k))) for k in range(t)] for q in range(t)])
        assert torch.equal(got, dense[b]), b


def test_dialogue_values_are_marked():
    """The tokens marked as answer values spell the values (byte stand-in tokenizer)."""
    import dialogues
    import tokenizer as tokenizer_lib
    docs = [{"text": ("Some distractor text here. " * 60 + "\n\n") * 4}]
    lists = {"female": ["Ada", "Grace"], "male": ["Alan"], "states": ["Ohio", "Maine"]}
    gen = dialogues.Generator(docs, lists, random.Random(3), max_chars=(800, 1200))
    rendered = [dialogues.render(gen.dialogue()) for _ in range(20)]
    tok = tokenizer_lib.ByteTokenizer()
    for (text, spans), d in zip(rendered, batches.tokenize_dialogues(tok, rendered)):
        assert len(spans) >= 2 and d.ids[0] == tokenizer_lib.SPECIALS.index(tokenizer_lib.BOS)
        for index, (a, b) in enumerate(spans, start=1):
            got = bytes(int(i) - len(tokenizer_lib.SPECIALS) for i in d.ids[d.values == index])
            assert got.decode() == text[a:b], (got, text[a:b])


def test_batched_windows_differ_per_row():
    _, g2, _ = gist_mask.insert_gists(torch.zeros(40), 2, GIST)
    _, g0, _ = gist_mask.insert_gists(torch.zeros(60), 0, GIST)
    is_gist = torch.stack([g2, g0])
    mask = gist_mask.visibility(is_gist, torch.tensor([8, 61]), 4)
    assert torch.equal(mask[0], gist_mask.visibility(g2[None], 8, 4)[0])
    assert torch.equal(mask[1], torch.ones(60, 60, dtype=torch.bool).tril())


def test_retention_is_monotone():
    _, is_gist, _ = gist_mask.insert_gists(torch.zeros(100), 4, GIST)
    mask = gist_mask.visibility(is_gist[None], 8, 4)[0]
    for k in range(mask.shape[0]):
        column = mask[k:, k].tolist()  # from q = k on: visible, then never again
        first_hidden = column.index(False) if False in column else len(column)
        assert not any(column[first_hidden:]), k


def test_labels_skip_gists():
    raw = torch.tensor([10, 11, 12, 13, 14])
    stream, is_gist, raw_pos = gist_mask.insert_gists(raw, 2, GIST)
    labels = gist_mask.stream_targets(raw, raw_pos, stream.shape[0] + 1)
    # stream: 10 11 G 12 13 G 14 | pad
    assert labels.tolist() == [11, 12, -100, 13, 14, -100, -100, -100]


def tiny_model():
    torch.manual_seed(0)
    config = model_lib.ModelConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, head_dim=8)
    m = model_lib.GistLlama(config).eval()
    with torch.no_grad():  # larger weights than the init, so every entry matters
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(8)
    return m


def decode_with_dropping_cache(m, stream, is_gist, sink, window):
    """Token by token, keeping only sinks, gists and the last `window` raw entries (the
    engine's retention), each with the RoPE of its own position."""
    c = m.config
    cos, sin = model_lib.rope_tables(c, stream.shape[0], stream.device)
    caches = [[] for _ in m.model.layers]  # per layer: (index, k, v)
    raw_seen, out = [], []
    for q in range(stream.shape[0]):
        if not is_gist[q]:
            raw_seen.append(q)
        keep_raw = set(raw_seen[-window:]) if window else set(raw_seen)
        x = m.model.embed_tokens(stream[q:q + 1])[None]
        for layer, cache in zip(m.model.layers, caches):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            qh = a.q_proj(h).view(1, 1, a.heads, a.head_dim).transpose(1, 2)
            kh = a.k_proj(h).view(1, 1, a.kv_heads, a.head_dim).transpose(1, 2)
            vh = a.v_proj(h).view(1, 1, a.kv_heads, a.head_dim).transpose(1, 2)
            qh = model_lib.apply_rope(qh, cos[q], sin[q])
            kh = model_lib.apply_rope(kh, cos[q], sin[q])
            cache.append((q, kh, vh))
            cache[:] = [e for e in cache if e[0] < sink or is_gist[e[0]] or e[0] in keep_raw]
            ks = torch.cat([e[1] for e in cache], dim=2)
            vs = torch.cat([e[2] for e in cache], dim=2)
            full = torch.ones(1, 1, ks.shape[2], dtype=torch.bool)
            att = model_lib.dense_attention(qh, ks, vs, full)
            x = x + a.o_proj(att.transpose(1, 2).reshape(1, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        out.append(m.lm_head(m.model.norm(x))[0, 0])
    return torch.stack(out)


def test_masked_forward_equals_dropping_cache():
    m = tiny_model()
    raw = torch.randint(0, 120, (45,))
    for mode in gist_mask.modes(8).values():
        with torch.no_grad():
            logits, stream, is_gist = gist_mask.stream_logits(m, raw, mode, 127, sink=4)
            ref = decode_with_dropping_cache(m, stream, is_gist.tolist(), 4, mode.window)
        assert torch.allclose(logits, ref, atol=1e-4), (mode, (logits - ref).abs().max())


def test_layout_rows_fit_and_label():
    layout = batches.Layout(seq_len=40, gist_id=GIST, pad_id=0, sink=4, window=8)
    for mode in gist_mask.modes(8).values():
        n = gist_mask.raw_budget(40, mode.ratio)
        raw = np.arange(1, n + 1, dtype=np.int32)
        valid = np.ones(n, dtype=bool)
        valid[-3:] = False  # padding at the end takes no loss
        values = np.zeros(n, dtype=np.int32)
        values[5] = 1
        ids, gist, labels, value, far = layout.row(raw, valid, values, mode)
        assert ids.shape == (40,) and int((~gist[: gist_mask.stream_length(n, mode.ratio)])
                                          .sum()) == n
        got = labels[labels != gist_mask.IGNORE].tolist()
        assert got == list(range(2, n - 2)), (mode, got)
        assert value.sum().item() == 1 and labels[value == 1].item() == 6


if __name__ == "__main__":
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    for t in tests:
        t()
        print(f"ok {t.__name__}")
    print(f"{len(tests)} passed, 0 failed")
