#!/usr/bin/env python3
"""GPU checks and throughput of the attention paths (run before training on a new machine):

    python3 bench_flex.py --tokenizer tokenizer-digits.json --out out

1. the digit-splitting tokenizer: one digit a token, text round-trips;
2. logits of the pilot-shaped model with flex + gist-first keys (flexmask.py) equal logits
   with the dense gist_mask.visibility mask, for every policy;
3. training-step throughput (forward + backward, torch.compile) per policy and stream
   length, gist keys compact (block-sparse) or interleaved, written to OUT/bench.json.
"""
import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import flexmask
import gist_mask
import model as model_lib
import tokenizer as tokenizer_lib


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    out = {}
    tok = tokenizer_lib.load(args.tokenizer)
    text = "Order 1234567 costs $89.50 on March 3, 2024; call 555-0142."
    enc = tok.encode(text, add_special_tokens=False)
    pieces = [tok.id_to_token(i) for i in enc.ids]
    assert tok.decode(enc.ids) == text, tok.decode(enc.ids)
    assert all(len(p.lstrip("Ġ")) == 1 for p in pieces if any(c.isdigit() for c in p)), pieces
    out["tokenizer"] = {"text": text, "pieces": pieces}
    print("tokenizer ok:", pieces, flush=True)

    dev = torch.device("cuda")
    torch.manual_seed(0)
    cfg = model_lib.ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=384,
                                num_hidden_layers=8, num_attention_heads=6,
                                num_key_value_heads=2, head_dim=64, intermediate_size=896,
                                rope_theta=500000.0, max_position_embeddings=16384)
    model = model_lib.GistLlama(cfg).to(dev)
    sink = 4
    cache = flexmask.MaskCache(sink, dev)
    t = 1280
    ids = torch.randint(6, cfg.vocab_size, (2, t), device=dev)
    diffs = {}
    with torch.no_grad():
        for name, (ratio, window) in {"full": (0, None), "r4": (4, 64), "r8": (8, 64),
                                      "r16": (16, 64), "window": (0, 64)}.items():
            bm, perm = cache.get(t, ratio, window)
            tables = cache.masks[(t, ratio, window)][2]
            x = ids.clone()
            x[:, tables["is_gist"]] = 5
            a = model(x, (bm, perm)).float()
            dense = gist_mask.visibility(tables["is_gist"][None].expand(2, t),
                                         t + 1 if window is None else window, sink)
            b = model(x, dense).float()
            diffs[name] = (a - b).abs().max().item()
    out["flex_vs_dense_max_abs_logit_diff_fp32"] = diffs
    print("flex (gist-first keys) vs dense mask, max |logit diff| fp32:", diffs, flush=True)
    assert max(diffs.values()) < 1e-3, diffs

    step_model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    n_mm = sum(q.numel() for q in model.parameters()) - model.model.embed_tokens.weight.numel()
    L, HD = cfg.num_hidden_layers, cfg.num_attention_heads * cfg.head_dim
    results = []
    for t, bsz, configs in ((16384, 8, [("full", 0, None, True), ("r8", 8, 64, True),
                                        ("r8", 8, 64, False), ("r16", 16, 64, True)]),):
        for name, ratio, window, compact in configs:
            c = cache
            bm, perm = c.get(t, ratio, window, compact)
            extra = () if compact else (False,)
            x = torch.randint(6, cfg.vocab_size, (bsz, t), device=dev)
            y = torch.randint(6, cfg.vocab_size, (bsz, t), device=dev)
            times = []
            for i in range(args.steps + 2):
                torch.cuda.synchronize()
                t0 = time.time()
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits = step_model(x, (bm, perm))
                loss = F.cross_entropy(logits.float().transpose(1, 2), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                times.append(time.time() - t0)
            dt = sorted(times[2:])[len(times[2:]) // 2]
            tokens = bsz * t
            pairs = c.pairs(t, ratio, window, *extra)
            flops = 6 * n_mm * tokens + 12 * L * HD * pairs * bsz
            r = {"t": t, "batch": bsz, "mode": name, "compact_gist_keys": compact,
                 "step_s": dt, "tok_s": tokens / dt, "useful_tflops": flops / dt / 1e12,
                 "mfu_989": flops / dt / 1e12 / 989, "blocks_computed": c.sparsity(t, ratio, window, *extra),
                 "first_step_s": times[0]}
            results.append(r)
            print(json.dumps(r), flush=True)
    out["throughput"] = results
    (args.out / "bench.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
