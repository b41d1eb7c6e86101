#!/usr/bin/env python3
"""Side-by-side markdown of one bench/gpu/run.sh run: peers.jsonl + ours.jsonl -> stdout.

Every figure printed comes from a JSON line of that run; a cell with no line says "-".
Usage: python3 bench/gpu/summarize.py OUT/peers.jsonl OUT/ours.jsonl
"""

import json
import sys


def load(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except OSError:
        pass
    return rows


def ms(x):
    return "-" if x is None else (f"{x:.3g} ms" if x < 100 else f"{x:.0f} ms")


def first(rows, **match):
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and "error" not in r:
            return r
    return None


def label(shape):
    return {"8b": "Llama-3.1-8B", "1b": "Llama-3.2-1B"}.get(shape, shape)


def main():
    peers, ours = load(sys.argv[1]), load(sys.argv[2])
    out = []
    env = first(peers, part="env")
    if env:
        out.append(f"GPU {env['gpu']}, torch {env['torch']}, transformers {env['transformers']}, "
                   f"{env['date_utc']}")
    ours_env = [r for r in ours if r.get("row") == "env"]
    for e in ours_env:
        out.append(f"ours {e['model']}: engine {e['engine']}, load {e['load_s']:.1f} s, "
                   f"KV pool {e['kv_pool_bytes'] / 2**30:.1f} GiB, page {e['page_bytes']} B")
    hbm = first(peers, part="hbm")
    if hbm:
        out.append(f"HBM read (torch.sum over 8 GiB): {hbm['tb_per_s']:.2f} TB/s "
                   f"(best {hbm.get('tb_per_s_best', 0):.2f})")
    out.append("")

    out.append("### Decode (ms per step; x floor in brackets)")
    out.append("| shape, context, batch | floor | transformers eager | static + compile | "
               "ours full | ours gist | ours full: attention alone |")
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    cases = [("8b", 2048, 1), ("8b", 16384, 1), ("8b", 4096, 32), ("1b", 2048, 1),
             ("1b", 16384, 1), ("1b", 4096, 32)]
    for shape, ctx, batch in cases:
        model = f"llama-{shape}"
        fl = first(peers, part="floor", shape=shape, context=ctx, batch=batch)
        eager = first(peers, part="peer", shape=shape, mode="eager", row="decode", context=ctx,
                      batch=batch)
        comp = first(peers, part="peer", shape=shape, mode="compile", row="decode", context=ctx,
                     batch=batch)
        if batch == 1:
            mine = [r for r in ours if r.get("row") == "decode" and r.get("model") == model
                    and r.get("context") == ctx and "error" not in r]
        else:
            mine = [r for r in ours if r.get("row") == "batched" and r.get("model") == model
                    and r.get("lengths") == "equal" and r.get("context") == ctx
                    and r.get("batch") == batch and "error" not in r]
        full = next((r for r in mine if r["policy"].startswith("full")), None)
        gist = next((r for r in mine if r["policy"].startswith("gist")), None)
        floor_ms = (fl or {}).get("floor_ms") or (full or {}).get("floor_ms")

        def cell(r, key="ms_per_step"):
            if not r:
                return "-"
            text = ms(r[key])
            if floor_ms:
                text += f" ({r[key] / floor_ms:.2f}x)"
            if batch > 1:
                text += f", {r['tok_per_s']:.0f} tok/s"
            return text

        att = (full or {}).get("attention", {}).get("ms")
        out.append(f"| {label(shape)}, {ctx}, {batch} | {ms(floor_ms)} | {cell(eager)} | "
                   f"{cell(comp)} | {cell(full)} | {cell(gist)} | {ms(att)} |")
    mixed = [r for r in ours if r.get("row") == "batched" and r.get("lengths") == "mixed"
             and "error" not in r]
    for r in mixed:
        out.append(f"\nMixed lengths ({r['model']}, {r['batch']} sequences, "
                   f"{r['context_min']}-{r['context_max']} tokens, {r['slots']} slots in all): "
                   f"{ms(r['ms_per_step'])}/step, {r['tok_per_s']:.0f} tok/s"
                   + (f", {r['x_floor']:.2f}x its floor" if "x_floor" in r else ""))
    out.append("")

    out.append("### Prefill")
    out.append("| shape, tokens | who | rows | time | TFLOP/s (causal count) | attention alone | "
               "attention TFLOP/s (visible) |")
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    for shape in ("8b", "1b"):
        p = first(peers, part="peer", shape=shape, row="prefill")
        if p:
            out.append(f"| {label(shape)}, {p['context']} | transformers eager SDPA | "
                       f"{p['context']} | {ms(p['ms'])} | {p['tflop_per_s']:.0f} | - | - |")
        for r in ours:
            if r.get("row") == "prefill" and r.get("model") == f"llama-{shape}":
                if "error" in r:
                    out.append(f"| {label(shape)} | ours {r.get('policy')} | error: "
                               f"{r['error'][:120]} | | | | |")
                    continue
                a = r.get("attention", {})
                out.append(f"| {label(shape)}, {r['raw_tokens']} | ours {r['policy']} | "
                           f"{r['rows']} | {ms(r['ms'])} | {r['tflop_per_s_causal_count']:.0f} | "
                           f"{ms(a.get('ms'))} | "
                           f"{a.get('tflop_per_s_visible', 0):.1f} |")
    pre = {r["policy"].split("(")[0]: r for r in ours if r.get("row") == "prefill"
           and r.get("model") == "llama-8b" and "attention" in r}
    if "full" in pre and "gist" in pre:
        ratio = pre["full"]["attention"]["ms"] / pre["gist"]["attention"]["ms"]
        out.append(f"\n8B attention alone, full / gist: {ratio:.2f}x (target >= 4x)")
    out.append("")

    out.append("### Capacity (sessions of one context in the KV pool; one decode batch of all)")
    out.append("| shape | policy | sessions | capped by | bytes / session | by arithmetic | "
               "step | aggregate tok/s | vs full (sessions, tok/s) |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape in ("8b", "1b"):
        caps = [r for r in ours if r.get("row") == "capacity"
                and r.get("model") == f"llama-{shape}" and "sessions" in r]
        base = next((r for r in caps if r["policy"].startswith("full")), None)
        for r in caps:
            versus = "-"
            if base and base["sessions"] and "tok_per_s" in r and "tok_per_s" in base:
                versus = (f"{r['sessions'] / base['sessions']:.1f}x, "
                          f"{r['tok_per_s'] / base['tok_per_s']:.1f}x")
            out.append(f"| {label(shape)} | {r['policy']} | {r['sessions']} | {r['capped_by']} | "
                       f"{r['bytes_per_session'] / 2**20:.0f} MiB | "
                       f"{r['sessions_by_arithmetic']} | {ms(r.get('ms_per_step'))} | "
                       f"{r.get('tok_per_s', 0):.0f} | {versus} |")
    out.append("")

    problems = [r for r in peers + ours if "error" in r or r.get("part") in ("error", "skipped")
                or "skipped" in r or "attention_error" in r]
    if problems:
        out.append("### Errors and skipped parts")
        for r in problems:
            out.append("- `" + json.dumps(r)[:400] + "`")
    print("\n".join(out))


if __name__ == "__main__":
    main()
