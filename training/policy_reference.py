#!/usr/bin/env python3
"""The PyTorch reference of gistmem's memory policies (gist-method.md sections 2-3), computed
over the whole stream at once with masks, never incrementally: what the C++ engine, serving
the same stream turn by turn and really dropping entries, must reproduce.

    /usr/bin/python3 training/policy_reference.py      # writes tests/fixtures/policies/

Needs only torch (Debian's python3-torch works). The forward pass is a literal Llama/Qwen2
in float64; with the `full` policy it is checked against the logits that transformers wrote
for the same checkpoint (tests/fixtures/models/*/reference_logits.safetensors), so the
reference stands on transformers, and its gist/window masks are checked against the training
recipe's (gist_mask.visibility), so training and serving share one contract.
"""
import json
import struct
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import gist_mask  # noqa: E402

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_safetensors(path: Path) -> dict:
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    body = data[8 + header_len:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).to(torch.float64)
    return out


def write_safetensors(path: Path, tensors: dict) -> None:
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class Model:
    """Llama-family forward (no rope scaling) over one sequence, with a per-layer hook that
    builds the attention's keys, values and mask."""

    def __init__(self, model_dir: Path):
        self.config = json.loads((model_dir / "config.json").read_text())
        self.w = load_safetensors(model_dir / "model.safetensors")
        c = self.config
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        theta = c.get("rope_theta") or c["rope_parameters"]["rope_theta"]
        assert c.get("rope_parameters", {}).get("rope_type", "default") == "default"
        idx = torch.arange(0, self.head_dim, 2, dtype=torch.float64)
        self.inv_freq = 1.0 / (theta ** (idx / self.head_dim))

    def linear(self, x, name):
        y = x @ self.w[name + ".weight"].T
        bias = self.w.get(name + ".bias")
        return y if bias is None else y + bias

    def norm(self, x, name):
        eps = self.config["rms_norm_eps"]
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.w[name + ".weight"]

    def rope(self, x, positions):  # x [n, heads, d]
        angles = positions[:, None].to(torch.float64) * self.inv_freq[None]
        cos = torch.cat([angles.cos()] * 2, -1)[:, None]
        sin = torch.cat([angles.sin()] * 2, -1)[:, None]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def logits(self, tokens, attend):
        """attend(k [n, kvh, d], v) -> (keys [m, kvh, d], values, mask [n, m] bool)."""
        n = len(tokens)
        positions = torch.arange(n)
        x = self.w["model.embed_tokens.weight"][torch.tensor(tokens)]
        group = self.heads // self.kv_heads
        for layer in range(self.config["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            h = self.norm(x, p + "input_layernorm")
            q = self.rope(self.linear(h, p + "self_attn.q_proj").view(n, self.heads, -1), positions)
            k = self.rope(self.linear(h, p + "self_attn.k_proj").view(n, self.kv_heads, -1),
                          positions)
            v = self.linear(h, p + "self_attn.v_proj").view(n, self.kv_heads, -1)
            keys, values, mask = attend(k, v)
            keys = keys.repeat_interleave(group, dim=1)
            values = values.repeat_interleave(group, dim=1)
            scores = torch.einsum("qhd,khd->hqk", q, keys) / self.head_dim ** 0.5
            scores = scores.masked_fill(~mask[None], float("-inf"))
            out = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).reshape(n, -1)
            x = x + self.linear(out, p + "self_attn.o_proj")
            h = self.norm(x, p + "post_attention_layernorm")
            gate = torch.nn.functional.silu(self.linear(h, p + "mlp.gate_proj"))
            x = x + self.linear(gate * self.linear(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        return self.norm(x, "model.norm") @ head.T


def stream_of(raw, policy):
    """Raw tokens -> (stream tokens, is_gist, raw index of each stream token)."""
    tokens, is_gist, raw_index = [], [], []
    for i, t in enumerate(raw):
        tokens.append(t), is_gist.append(False), raw_index.append(i)
        if policy["kind"] == "gist" and (i + 1) % policy["ratio"] == 0:
            tokens.append(policy["gist_token_id"]), is_gist.append(True), raw_index.append(i)
    return tokens, is_gist, raw_index


def visible(policy, is_gist, q, k):
    """The contract, literally: q sees k <= q iff k < S, or k is a gist, or k is a raw token
    among the last W raw tokens up to and including q (full: every k <= q)."""
    if k > q:
        return False
    if policy["kind"] == "full":
        return True
    raws_so_far = [i for i in range(q + 1) if not is_gist[i]]
    return k < policy["sink_tokens"] or is_gist[k] or k in raws_so_far[-policy["window"]:]


def policy_logits(model, raw, policy):
    tokens, is_gist, raw_index = stream_of(raw, policy)
    n = len(tokens)
    mask = torch.tensor([[visible(policy, is_gist, q, k) for k in range(n)] for q in range(n)])
    spans = []  # pool: (span's last raw, stream indices of its non-sink raw tokens)
    if policy["kind"] == "pool":
        r, s = policy["ratio"], policy["sink_tokens"]
        for j in range(len(raw) // r):
            members = [i for i in range(n) if j * r <= raw_index[i] < (j + 1) * r and i >= s]
            if members:
                spans.append(((j + 1) * r - 1, members))
    if policy["kind"] in ("gist", "window"):
        window = policy["window"]
        theirs = gist_mask.visibility(torch.tensor(is_gist)[None], window, policy["sink_tokens"])
        assert torch.equal(theirs[0], mask), "gist_mask.visibility disagrees with the contract"

    def attend(k, v):
        if not spans:
            return k, v, mask
        # Pooled span j is visible once all its raw tokens left the window: at q, the last W
        # raw tokens up to q no longer include the span's last raw token.
        pk = torch.stack([k[m].mean(0) for _, m in spans])
        pv = torch.stack([v[m].mean(0) for _, m in spans])
        clock = torch.tensor([raw_index[i] + (0 if is_gist[i] else 1) for i in range(n)])
        last = torch.tensor([last for last, _ in spans])
        pmask = clock[:, None] >= last[None] + 1 + policy["window"]
        return torch.cat([k, pk]), torch.cat([v, pv]), torch.cat([mask, pmask], 1)

    return model.logits(tokens, attend), tokens, is_gist


def document_logits(model, a_raw, doc_raw, b_raw, sp, dp):
    """A session reads a_raw, attaches a document (doc_raw read alone under policy dp, placed
    right after), then reads b_raw. The stream is [A, D, B] at consecutive positions. Rows of
    D see only D (by dp, as if D started at 0); rows of A and B see the session's tokens by sp
    (its raw clock and gist grid count session raw tokens only) and, after D, every document
    entry its last token could see (gist-method.md section 5)."""
    a_tok, a_gist, a_raw_idx = stream_of(a_raw, sp)
    d_tok, d_gist, d_raw_idx = stream_of(doc_raw, dp)
    ab_tok, ab_gist, ab_raw_idx = stream_of(list(a_raw) + list(b_raw), sp)
    na, nd = len(a_tok), len(d_tok)
    tokens = a_tok + d_tok + ab_tok[na:]
    owner = ["s"] * na + ["d"] * nd + ["s"] * (len(ab_tok) - na)
    n = len(tokens)
    # Indices into each owner's own stream (what its policy rule is stated on).
    local = list(range(na)) + list(range(nd)) + list(range(na, len(ab_tok)))
    gist_of = {"s": ab_gist, "d": d_gist}
    raw_of = {"s": ab_raw_idx, "d": d_raw_idx}
    policy_of = {"s": sp, "d": dp}

    def sees(q, k):
        if k > q:
            return False
        oq, ok = owner[q], owner[k]
        if oq == "d" and ok == "s":
            return False
        if oq == ok:
            return visible(policy_of[oq], gist_of[oq], local[q], local[k])
        return visible(dp, d_gist, nd - 1, local[k])  # a session row looking at the document

    mask = torch.tensor([[sees(q, k) for k in range(n)] for q in range(n)])

    def clock(o, q):
        """Raw tokens of owner o up to and including row q (its own stream)."""
        idx = local[q]
        return raw_of[o][idx] + (0 if gist_of[o][idx] else 1)

    pooled = []  # (stream rows of the members, who sees it: function of q)
    for o in ("s", "d"):
        p = policy_of[o]
        if p["kind"] != "pool":
            continue
        rows = [i for i in range(n) if owner[i] == o]
        raws = len([i for i in rows if not gist_of[o][local[i]]])
        r, w, s = p["ratio"], p["window"], p["sink_tokens"]
        for j in range(raws // r):
            members = [i for i in rows if j * r <= raw_of[o][local[i]] < (j + 1) * r
                       and local[i] >= s]
            if not members:
                continue
            due = (j + 1) * r + w
            if o == "s":
                seen = [owner[q] == "s" and members[-1] < q + 1 and clock("s", q) >= due
                        for q in range(n)]
            else:
                doc_end = len(doc_raw) >= due
                seen = [(owner[q] == "d" and clock("d", q) >= due) or
                        (owner[q] == "s" and q >= na + nd and doc_end) for q in range(n)]
            pooled.append((members, torch.tensor(seen)))

    def attend(k, v):
        if not pooled:
            return k, v, mask
        pk = torch.stack([k[m].mean(0) for m, _ in pooled])
        pv = torch.stack([v[m].mean(0) for m, _ in pooled])
        pmask = torch.stack([seen for _, seen in pooled], 1)
        return torch.cat([k, pk]), torch.cat([v, pv]), torch.cat([mask, pmask], 1)

    return model.logits(tokens, attend), tokens


def check_full_against_transformers(model, model_dir: Path):
    cases = json.loads((model_dir / "reference_cases.json").read_text())["cases"]
    expected = load_safetensors(model_dir / "reference_logits.safetensors")
    worst = 0.0
    for case in cases:
        ours, _, _ = policy_logits(model, case["tokens"], {"kind": "full"})
        want = expected[case["logits"]]
        worst = max(worst, ((ours - want).abs().max(-1).values / want.abs().max(-1).values).max())
    assert worst < 1e-5, f"full-policy reference vs transformers: {worst}"
    return float(worst)


def main():
    model_dir = ROOT / "tests/fixtures/models/qwen2-tied-f32"
    model = Model(model_dir)
    vs_hf = check_full_against_transformers(model, model_dir)
    gen = torch.Generator().manual_seed(1234)
    gist_id = model.config["vocab_size"] - 1
    # Turns of the served stream: long prompts, then token-by-token decoding, then more.
    turns = [13, 41, 1, 1, 1, 1, 1, 1, 1, 30, 1, 1, 1, 9]
    raw = torch.randint(0, gist_id, (sum(turns),), generator=gen).tolist()
    policies = [
        {"name": "full", "kind": "full"},
        {"name": "window", "kind": "window", "window": 8, "sink_tokens": 2},
        {"name": "pool-r4", "kind": "pool", "ratio": 4, "window": 8, "sink_tokens": 2},
        {"name": "pool-r2-sinks3", "kind": "pool", "ratio": 2, "window": 2, "sink_tokens": 3},
        {"name": "gist-r4", "kind": "gist", "ratio": 4, "window": 8, "sink_tokens": 2},
        {"name": "gist-r2-sinks3", "kind": "gist", "ratio": 2, "window": 4, "sink_tokens": 3},
    ]
    out = ROOT / "tests/fixtures/policies"
    out.mkdir(parents=True, exist_ok=True)
    tensors, cases = {}, []
    for p in policies:
        if p["kind"] == "gist":
            p["gist_token_id"] = gist_id
        logits, tokens, is_gist = policy_logits(model, raw, p)
        tensors[p["name"]] = logits
        cases.append({"policy": p, "stream_tokens": len(tokens),
                      "gist_rows": [i for i, g in enumerate(is_gist) if g]})
    # Documents: a session reads A, attaches a document read alone, reads B in turns.
    doc_cases = []
    a_raw, doc_raw, b_raw = raw[:21], raw[21:21 + 45], raw[66:66 + 23]
    for name, sp, dp in [
        ("doc-full-into-full", policies[0], policies[0]),
        ("doc-gist-into-gist", policies[4], policies[4]),
        ("doc-pool-into-window", policies[1], policies[2]),
        ("doc-gist-into-pool", policies[3], policies[5]),
    ]:
        logits, tokens = document_logits(model, a_raw, doc_raw, b_raw, sp, dp)
        tensors[name] = logits
        doc_cases.append({"name": name, "session_policy": sp, "document_policy": dp,
                          "stream_tokens": len(tokens)})
    write_safetensors(out / "qwen2-tied-f32.safetensors", tensors)
    (out / "qwen2-tied-f32.json").write_text(json.dumps({
        "model": "tests/fixtures/models/qwen2-tied-f32", "raw_tokens": raw, "turns": turns,
        "note": "logits of every stream row (gist rows included), float64 reference in fp32; "
                f"full policy vs transformers: max row-relative error {vs_hf:.2e}",
        "cases": cases, "documents": {"a": len(a_raw), "document": len(doc_raw),
                                      "b_turns": [10, 1, 1, 1, 1, 9], "cases": doc_cases}},
        indent=1) + "\n")
    print(f"wrote {len(cases)} cases; full vs transformers {vs_hf:.2e}")


if __name__ == "__main__":
    main()
