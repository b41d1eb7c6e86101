#!/usr/bin/env python3
"""Long-context gist training (issue 14): recall-dense sessions, a length curriculum up to
16384 positions, one mode per batch with cached block masks, a worker-pool data pipeline,
answer-weighted loss, checkpoint/resume in pieces, and held-out recall per policy, session
length and distance.

    python3 train_long.py --tokenizer tokenizer-digits.json --data data --out out \
        --minutes 22 --deadline 560 [--resume out/state.pt]

Each call is one piece: it trains until --deadline seconds after its start (or the end of the
--minutes budget of optimisation, summed over pieces), evaluates, and saves out/ckpt.pt (bf16
weights, the format export.py reads) and out/state.pt (fp32 weights + optimizer, to resume).
Differences from train.py (which made the shipped model) are listed in README.md.
"""
import argparse
import gzip
import json
import lzma
import math
import multiprocessing
import os
import queue
import random
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import flexmask
import gist_mask
import model as model_lib
import recall
import tokenizer as tokenizer_lib

START = time.time()
HERE = Path(__file__).resolve().parent
SINK, WINDOW = 4, 64
MODES = {"full": 0, "r4": 4, "r8": 8, "r16": 16}          # trained: ratio (0 = no gists)
EVAL_MODES = {"full": (0, None), "r4": (4, WINDOW), "r8": (8, WINDOW), "r16": (16, WINDOW),
              "window": (0, WINDOW)}
DIST_BUCKETS = [(0, 64), (64, 512), (512, 2048), (2048, 8192), (8192, 1 << 30)]
DIST_NAMES = ["<64", "64-512", "512-2K", "2K-8K", ">=8K"]


class Log:
    def __init__(self, path: Path):
        self.file = open(path, "a")

    def __call__(self, message: str):
        line = f"[{time.time() - START:7.1f}s] {message}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


# ---------------------------------------------------------------- data (worker processes)
_W = {}


def _init_worker():
    torch.set_num_threads(1)


def gen_rows(task):
    """task (seed, n, count, fact_share range, prose share[, generic share]) -> list of
    (ids, values, dist). The generic share (copying.py's facts among a session's statement
    groups) defaults to --generic-share."""
    seed, n, count, share, prose_share = task[:5]
    generic = task[5] if len(task) > 5 else _W.get("generic", 0.0)
    rng = random.Random(seed)
    session = recall.Session(_W["docs"], _W["lists"], rng, generic_share=generic)
    out = []
    prose = _W["prose"]
    for _ in range(count):
        if rng.random() < prose_share:
            at = rng.randrange(len(prose) - n)
            ids = np.concatenate([[_W["bos"]], prose[at:at + n - 1]]).astype(np.int32)
            out.append((ids, np.zeros(n, np.int16), np.zeros(n, np.int32)))
        else:
            out.append(recall.make_row(_W["tok"], session, n, rng.uniform(*share)))
    return out


class Pipeline:
    """A pool of worker processes keeps a queue of rows of the current phase full."""

    def __init__(self, workers: int, seed: int, depth: int = 48):
        self.pool = multiprocessing.get_context("fork").Pool(workers, _init_worker)
        self.seed, self.depth = seed, depth
        self.phase = None
        self.q = queue.Queue(maxsize=4096)
        self.counter = 0
        self.closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def close(self, timeout: float = 10):
        """Stops the feeding thread and terminates the workers (bounded by `timeout`)."""
        self.closed = True
        ender = threading.Thread(target=self.pool.terminate, daemon=True)
        ender.start()
        ender.join(timeout)

    def set_phase(self, phase):
        self.phase = phase

    def _run(self):
        pending = []
        while not self.closed:
            phase = self.phase
            if phase is None:
                time.sleep(0.05)
                continue
            try:
                while len(pending) < self.depth:
                    self.counter += 1
                    task = (self.seed * 1000003 + self.counter, phase["t"],
                            phase["rows_per_task"], phase["share"], phase["prose"])
                    pending.append((phase["name"], self.pool.apply_async(gen_rows, (task,))))
                name, result = pending.pop(0)
                rows = result.get()
            except ValueError:  # the pool was closed under us: the run is ending
                return
            for row in rows:
                self.q.put((name, row))

    def rows(self, phase, count):
        out = []
        while len(out) < count:
            name, row = self.q.get()
            if name == phase["name"]:
                out.append(row)
        return out


def stream_batch(rows, n, t, tables, gist_id, pad_id, device):
    """Raw rows (first n tokens) -> stream ids, labels, answer index, distance [B, t]."""
    ids = torch.from_numpy(np.stack([r[0][:n] for r in rows]).astype(np.int64))
    vals = torch.from_numpy(np.stack([r[1][:n] for r in rows]).astype(np.int64))
    dist = torch.from_numpy(np.stack([r[2][:n] for r in rows]).astype(np.int64))
    ids, vals, dist = (x.pin_memory().to(device, non_blocking=True) if device.type == "cuda"
                       else x for x in (ids, vals, dist))
    is_gist = tables["is_gist"]
    raw_pos = torch.nonzero(~is_gist).flatten()[:n]
    b = ids.shape[0]
    stream = torch.full((b, t), pad_id, dtype=torch.long, device=device)
    stream[:, is_gist] = gist_id
    stream[:, raw_pos] = ids
    labels = torch.full((b, t), gist_mask.IGNORE, dtype=torch.long, device=device)
    labels[:, raw_pos[:-1]] = ids[:, 1:]
    v = torch.zeros((b, t), dtype=torch.long, device=device)
    v[:, raw_pos[:-1]] = vals[:, 1:]
    d = torch.zeros((b, t), dtype=torch.long, device=device)
    d[:, raw_pos[:-1]] = dist[:, 1:]
    far = torch.zeros((b, t), dtype=torch.bool, device=device)
    far[:, raw_pos[:-1]] = (torch.arange(1, n, device=device) >= SINK + WINDOW)[None]
    return stream, labels, v, d, far


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, cache, sets, gist_id, pad_id, device, modes=EVAL_MODES):
    """sets: {name: (n raw, t stream, batch, session rows, prose rows)} -> metrics."""
    was = model.training
    model.eval()
    results = {}
    for name, (n, t, bs, sessions, prose) in sets.items():
        for mode, (ratio, window) in modes.items():
            mask = cache.get(t, ratio, window)
            tables = cache.masks[(t, ratio, window)][2]
            acc = {"loss": 0.0, "n": 0, "v_loss": 0.0, "v_n": 0, "v_right": 0,
                   "exact": 0, "values": 0, "p_loss": 0.0, "p_n": 0, "p_far": 0.0, "p_far_n": 0,
                   "dist_right": [0] * len(DIST_BUCKETS), "dist_n": [0] * len(DIST_BUCKETS)}
            for kind, rows in (("s", sessions), ("p", prose)):
                for at in range(0, len(rows), bs):
                    chunk = rows[at:at + bs]
                    ids, labels, vals, dist, far = stream_batch(chunk, n, t, tables, gist_id,
                                                                pad_id, device)
                    with torch.autocast(device.type, dtype=torch.bfloat16,
                                        enabled=device.type == "cuda"):
                        logits = model(ids, mask)
                    logits = logits.float()
                    valid = labels != gist_mask.IGNORE
                    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]),
                                           labels.clamp(min=0).view(-1),
                                           reduction="none").view(labels.shape)
                    if kind == "p":
                        acc["p_loss"] += loss[valid].sum().item()
                        acc["p_n"] += valid.sum().item()
                        acc["p_far"] += loss[valid & far].sum().item()
                        acc["p_far_n"] += (valid & far).sum().item()
                        continue
                    right = logits.argmax(-1) == labels
                    acc["loss"] += loss[valid].sum().item()
                    acc["n"] += valid.sum().item()
                    isv = valid & (vals > 0)
                    acc["v_loss"] += loss[isv].sum().item()
                    acc["v_n"] += isv.sum().item()
                    acc["v_right"] += right[isv].sum().item()
                    rows_idx = torch.arange(ids.shape[0], device=device)[:, None].expand_as(vals)
                    keys = (rows_idx * 65536 + vals)[isv]
                    uniq, inv = keys.unique(return_inverse=True)
                    wrong = torch.zeros(len(uniq), device=device).index_add_(
                        0, inv, (~right[isv]).float())
                    dv = torch.zeros(len(uniq), dtype=torch.long, device=device).scatter_(
                        0, inv, dist[isv])
                    ok = wrong == 0
                    acc["exact"] += ok.sum().item()
                    acc["values"] += len(uniq)
                    for i, (lo, hi) in enumerate(DIST_BUCKETS):
                        sel = (dv >= lo) & (dv < hi)
                        acc["dist_n"][i] += sel.sum().item()
                        acc["dist_right"][i] += (ok & sel).sum().item()
            results[f"{name}/{mode}"] = {
                "session_loss": acc["loss"] / max(acc["n"], 1),
                "value_loss": acc["v_loss"] / max(acc["v_n"], 1),
                "value_token_acc": acc["v_right"] / max(acc["v_n"], 1),
                "value_exact": acc["exact"] / max(acc["values"], 1),
                "values": acc["values"],
                "prose_loss": acc["p_loss"] / max(acc["p_n"], 1) if acc["p_n"] else None,
                "prose_far_loss": acc["p_far"] / max(acc["p_far_n"], 1) if acc["p_n"] else None,
                "exact_by_distance": {k: [r, c] for k, r, c in zip(
                    DIST_NAMES, acc["dist_right"], acc["dist_n"])},
            }
    model.train(was)
    return results


def table(results) -> str:
    lines = [f"{'set/mode':14s} {'sess_loss':>9s} {'prose':>6s} {'v_loss':>7s} {'v_tok':>6s} "
             f"{'exact':>6s} {'n':>5s}  exact by distance " + " ".join(DIST_NAMES)]
    for key, r in results.items():
        dist = " ".join(f"{(a / b if b else float('nan')):.2f}({b})"
                        for a, b in r["exact_by_distance"].values())
        prose = f"{r['prose_loss']:.3f}" if r["prose_loss"] is not None else "-"
        lines.append(f"{key:14s} {r['session_loss']:9.4f} {prose:>6s} {r['value_loss']:7.3f} "
                     f"{r['value_token_acc']:6.3f} {r['value_exact']:6.3f} {r['values']:5d}  "
                     f"{dist}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def lr_at(progress, step, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def parse_phases(text):
    """"until:T:batch:share_lo-share_hi:prose,..." -> phases (until = progress in [0, 1])."""
    phases = []
    for i, part in enumerate(text.split(",")):
        until, t, b, share, prose = part.split(":")
        lo, hi = (float(x) for x in share.split("-"))
        t = int(t)
        phases.append({"name": f"p{i}", "until": float(until), "t": t, "batch": int(b),
                       "share": (lo, hi), "prose": float(prose),
                       "rows_per_task": max(1, 16384 // t)})
    return phases


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", type=Path)
    p.add_argument("--minutes", type=float, default=22.0, help="optimisation, all pieces")
    p.add_argument("--deadline", type=float, default=0, help="end this piece N s after start")
    p.add_argument("--eval-reserve", type=float, default=100,
                   help="seconds kept before the deadline for the final evaluation")
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--phases", default="0.35:2048:32:0.5-0.95:0.05,1.0:16384:4:0.1-0.5:0.15")
    p.add_argument("--mode-weights", default="full:0.4,r4:0.2,r8:0.25,r16:0.15")
    p.add_argument("--late-mode-weights", default="",
                   help="mode weights from the second phase on (default: --mode-weights); "
                        "the same modes in the same order")
    p.add_argument("--save-every", type=float, default=0,
                   help="also write ckpt.pt every N s of wall time (a cut-short run can "
                        "still be exported)")
    p.add_argument("--stop-file", type=Path,
                   help="when this file appears, end training early (then save and evaluate)")
    p.add_argument("--value-weight", type=float, default=4.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--attn", choices=["flex", "dense"], default="flex",
                   help="dense: CPU smoke tests only")
    p.add_argument("--no-compact", action="store_true", help="gists interleaved in the keys")
    p.add_argument("--device", default="cuda")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=896)
    p.add_argument("--rope-theta", type=float, default=500000.0)
    p.add_argument("--max-positions", type=int, default=16384)
    p.add_argument("--generic-share", type=float, default=0.7,
                   help="share of a training session's statement groups made by copying.py "
                        "(arbitrary keys, value shapes and phrasings; 0 = the gistmem-16k data)")
    p.add_argument("--eval", default="1K:1024:96:32:0,4K:4096:64:16:0,16K:13107:32:8:0,"
                                     "4Kg:4096:64:16:1,16Kg:13107:16:8:1",
                   help="name:raw tokens:sessions:batch[:generic share] (the same rows for "
                        "every policy; without the share, --generic-share). The sets with 0 "
                        "are gistmem-16k's; the 'g' sets are copying.py's facts alone")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the held-out evaluation (intermediate pieces)")
    p.add_argument("--eval-prose", type=int, default=32, help="prose rows in the 4K set")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16, datasheet")
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "train.log")
    log(f"args {vars(args)}")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True

    # Data: prose tokens and documents in this process, inherited by the forked workers.
    tok = tokenizer_lib.load(args.tokenizer)
    specials = tokenizer_lib.special_ids(tok)
    gist_id, bos_id, pad_id = (specials[tokenizer_lib.GIST], specials[tokenizer_lib.BOS],
                               specials[tokenizer_lib.EOS])
    xz = args.data / "corpus.jsonl.xz"  # a smaller copy for the trip to the GPU machine
    opener = (lambda: lzma.open(xz, "rt")) if xz.exists() else (
        lambda: gzip.open(args.data / "corpus.jsonl.gz", "rt"))
    docs = [json.loads(line) for line in opener()]
    lists = json.loads((args.data / "lists.json").read_text())
    splits = {}
    for split in ("train", "eval"):
        ds = [d for d in docs if d["split"] == split]
        enc = tok.encode_batch([d["text"] for d in ds], add_special_tokens=False)
        prose = np.concatenate([np.asarray(e.ids + [pad_id], dtype=np.int32) for e in enc])
        splits[split] = (ds, prose)
    log(f"data: train {len(splits['train'][0])} docs {len(splits['train'][1])} prose tokens; "
        f"held-out {len(splits['eval'][0])} docs {len(splits['eval'][1])} tokens")
    digits = tok.encode("order 1234567 costs $89.50", add_special_tokens=False)
    log(f"tokenizer check: 'order 1234567 costs $89.50' -> {len(digits.ids)} tokens "
        f"{[tok.id_to_token(i) for i in digits.ids] if hasattr(tok, 'id_to_token') else ''}")

    # Held-out sets first (workers built on the held-out documents), then the training pool.
    _W.update(tok=tok, docs=splits["eval"][0], lists=lists, prose=splits["eval"][1], bos=bos_id,
              generic=args.generic_share)
    eval_sets = {}
    with multiprocessing.get_context("fork").Pool(args.workers, _init_worker) as pool:
        for i, part in enumerate(args.eval.split(",")):
            name, n, count, bs, *generic = part.split(":")
            n, count, bs = int(n), int(count), int(bs)
            generic = float(generic[0]) if generic else args.generic_share
            tasks = [(10 ** 9 + 1000 * i + j, n, 1, (0.1, 0.6), 0.0, generic)
                     for j in range(count)]
            sessions = [r for rows in pool.map(gen_rows, tasks) for r in rows]
            prose = []
            if name == "4K" and args.eval_prose:
                prose = [r for rows in pool.map(gen_rows, [(2 * 10 ** 9 + j, n, 1, (0, 0), 1.0)
                                                           for j in range(args.eval_prose)])
                         for r in rows]
            t = -(-gist_mask.stream_length(n, 4) // 128) * 128
            eval_sets[name] = (n, t, bs, sessions, prose)
            answers = sum(int(len(np.unique(r[1])) - 1) for r in sessions)
            log(f"held-out {name}: {count} sessions of {n} raw tokens (stream {t}), "
                f"{answers} answers, generic share {generic}; {len(prose)} prose rows")
    _W.update(docs=splits["train"][0], prose=splits["train"][1])
    phases = parse_phases(args.phases)
    saved = None
    if args.resume:  # on the CPU, before the pool forks (CUDA must not be initialised yet)
        saved = torch.load(args.resume, map_location="cpu", weights_only=False)
    # A resumed piece draws new rows: its data seed depends on the step it starts from.
    pipe = Pipeline(args.workers, args.seed + (7919 * saved["state"]["step"] if saved else 0))

    if cuda:
        log(f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    config = model_lib.ModelConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads, max_position_embeddings=args.max_positions,
        intermediate_size=args.intermediate, rope_theta=args.rope_theta)
    model = model_lib.GistLlama(config).to(device)
    counts = model_lib.count_parameters(model)
    n_matmul = counts["total"] - model.model.embed_tokens.weight.numel()
    log(f"model {config.to_dict()} parameters {counts} (bf16 {2 * counts['total'] / 1e6:.1f} MB)")
    decay = [q for q in model.parameters() if q.dim() == 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95),
                                  **({"fused": True} if cuda else {}))
    state = {"step": 0, "trained": 0.0, "tokens": 0, "flops": 0.0, "history": []}
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        del saved
        log(f"resumed from {args.resume}: step {state['step']}, {state['trained']:.0f}s trained")
    if args.compile:
        import torch._dynamo as dynamo
        dynamo.config.cache_size_limit = 64
        dynamo.config.automatic_dynamic_shapes = False
    step_model = torch.compile(model) if args.compile else model
    cache = flexmask.MaskCache(SINK, device, compact=not args.no_compact,
                               dense=args.attn == "dense")
    def parse_weights(text):
        names = [kv.split(":")[0] for kv in text.split(",")]
        w = np.asarray([float(kv.split(":")[1]) for kv in text.split(",")])
        assert all(m in MODES for m in names) and (w >= 0).all() and w.sum() > 0, text
        return names, w / w.sum()

    names, early_weights = parse_weights(args.mode_weights)
    late_weights = early_weights
    if args.late_mode_weights:
        late_names, late_weights = parse_weights(args.late_mode_weights)
        assert late_names == names, "--late-mode-weights: the modes of --mode-weights, in order"
    weights = early_weights
    mode_rng = np.random.default_rng(args.seed + state["step"])
    budget = args.minutes * 60
    L, HD = config.num_hidden_layers, config.num_attention_heads * config.head_dim

    def phase_at(progress):
        for ph in phases:
            if progress < ph["until"]:
                return ph
        return phases[-1]

    gist = {"gist_token_id": gist_id, "ratios": [4, 8, 16], "default_ratio": 8,
            "sink_tokens": SINK, "window": WINDOW}

    def save_ckpt():
        """bf16 weights in export.py's format; written to a temporary name, then renamed."""
        bf16 = {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}
        tmp = args.out / "ckpt.pt.tmp"
        torch.save({"model": {k: v.cpu() for k, v in bf16.items()}, "config": config.to_dict(),
                    "gist": gist, "train_seq": args.max_positions, "step": state["step"]}, tmp)
        os.replace(tmp, args.out / "ckpt.pt")
        return bf16

    def step_fn(ids, mask, labels, vals, lr):
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = step_model(ids, mask)
        # Flat [B*T, V] rows: cross_entropy over a transposed [B, V, T] view (train.py's way)
        # runs a strided log_softmax that costs more than the whole model at this size.
        ce = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1),
                             ignore_index=gist_mask.IGNORE, reduction="none").view(labels.shape)
        valid = (labels != gist_mask.IGNORE).float()
        w = valid * (1 + (args.value_weight - 1) * (vals > 0).float())
        loss = (ce * w).sum() / w.sum()
        loss.backward()
        grad = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        plain = (ce * valid).sum() / valid.sum()
        isv = valid * (vals > 0).float()
        vloss = (ce * isv).sum() / isv.sum().clamp(min=1)
        return plain, vloss, grad

    log("training")
    acc_sum = torch.zeros(len(names), 2, device=device)
    acc_n = [0] * len(names)
    window_tokens, window_flops, window_time = 0, 0.0, 0.0
    seen = set()
    phase = None
    piece_steps = 0
    last_save = time.time()
    while True:
        progress = state["trained"] / budget
        ph = phase_at(progress)
        if phase is not ph:
            phase = ph
            pipe.set_phase(ph)
            weights = early_weights if ph is phases[0] else late_weights
            log(f"phase {ph['name']}: T {ph['t']}, batch {ph['batch']}, fact share {ph['share']}, "
                f"prose rows {ph['prose']}, modes {dict(zip(names, weights.round(3).tolist()))}")
        mode = names[mode_rng.choice(len(names), p=weights)]
        ratio = MODES[mode]
        t, bsz = ph["t"], ph["batch"]
        n = gist_mask.raw_budget(t, ratio)
        window = None if ratio == 0 else WINDOW
        t0 = time.time()
        rows = pipe.rows(ph, bsz)
        t_data = time.time() - t0
        mask = cache.get(t, ratio, window)
        tables = cache.masks[(t, ratio, window)][2]
        ids, labels, vals, _, _ = stream_batch(rows, n, t, tables, gist_id, pad_id, device)
        lr = lr_at(progress, state["step"], args.lr, args.warmup)
        plain, vloss, grad = step_fn(ids, mask, labels, vals, lr)
        state["step"] += 1
        piece_steps += 1
        tokens = ids.numel()
        flops = 6 * n_matmul * tokens + 12 * L * HD * cache.pairs(t, ratio, window) * bsz
        i = names.index(mode)
        acc_sum[i] += torch.stack([plain.detach(), vloss.detach()])
        acc_n[i] += 1
        log_now = piece_steps % 25 == 0 or piece_steps <= 3
        if cuda and log_now:
            torch.cuda.synchronize()
        elapsed = time.time() - t0
        if (t, mode) in seen and piece_steps > 3:  # a first (length, mode) step may compile
            state["trained"] += elapsed
            state["tokens"] += tokens
            state["flops"] += flops
            window_tokens += tokens
            window_flops += flops
            window_time += elapsed
        seen.add((t, mode))
        if log_now:
            sums = acc_sum.tolist()
            per_mode = " ".join(f"{m} {sums[j][0] / acc_n[j]:.3f}/{sums[j][1] / acc_n[j]:.2f}"
                                for j, m in enumerate(names) if acc_n[j])
            tok_s = window_tokens / max(window_time, 1e-9)
            mfu = window_flops / max(window_time, 1e-9) / 1e12 / args.peak_tflops
            log(f"step {state['step']} {ph['name']} T{t} {mode} loss {plain.item():.4f} "
                f"value {vloss.item():.3f} [mode loss/value: {per_mode}] lr {lr:.2e} "
                f"grad {grad.item():.2f} trained {state['trained']:.0f}s {tok_s / 1e3:.0f}k tok/s "
                f"MFU {mfu * 100:.1f}% data-wait {t_data * 1e3:.0f}ms")
            state["history"].append({"step": state["step"], "trained": state["trained"],
                                     "phase": ph["name"], "t": t,
                                     "mode_loss": {m: sums[j][0] / acc_n[j]
                                                   for j, m in enumerate(names) if acc_n[j]},
                                     "mode_value_loss": {m: sums[j][1] / acc_n[j]
                                                         for j, m in enumerate(names) if acc_n[j]},
                                     "tok_s": tok_s, "mfu": mfu})
            acc_sum.zero_()
            acc_n = [0] * len(names)
            window_tokens, window_flops, window_time = 0, 0.0, 0.0
        if args.save_every and time.time() - last_save >= args.save_every:
            save_ckpt()
            last_save = time.time()
            log(f"saved {args.out / 'ckpt.pt'} at step {state['step']}")
        late = args.deadline and time.time() - START >= args.deadline - args.eval_reserve
        stop = args.stop_file is not None and args.stop_file.exists()
        if stop:
            log(f"{args.stop_file} exists: ending training at step {state['step']}")
        if (state["trained"] >= budget or late or stop
                or (args.max_steps and piece_steps >= args.max_steps)):
            break

    log(f"piece done: step {state['step']}, {state['trained']:.0f}s of optimisation in all, "
        f"{state['tokens'] / 1e6:.1f} M stream tokens, "
        f"{state['tokens'] / max(state['trained'], 1e-9) / 1e3:.0f}k tok/s, "
        f"MFU {state['flops'] / max(state['trained'], 1e-9) / 1e12 / args.peak_tflops * 100:.1f}% "
        f"of {args.peak_tflops:.0f} TFLOP/s")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                "config": config.to_dict()}, args.out / "state.pt")
    bf16 = save_ckpt()
    log(f"saved {args.out / 'state.pt'} and {args.out / 'ckpt.pt'}")
    results = {}
    if not args.no_eval:
        model.load_state_dict({k: v.float() for k, v in bf16.items()})
        t0 = time.time()
        results = evaluate(model, cache, eval_sets, gist_id, pad_id, device)
        log(f"held-out (bf16 weights, {time.time() - t0:.0f}s):\n" + table(results))
    sparsity = ({} if cache.dense else
                {f"{t}/{r}/{w}": cache.sparsity(t, r, w) for (t, r, w) in cache.masks})
    (args.out / "metrics.json").write_text(json.dumps({
        "steps": state["step"], "train_seconds": state["trained"], "stream_tokens": state["tokens"],
        "tokens_per_s": state["tokens"] / max(state["trained"], 1e-9),
        "mfu": state["flops"] / max(state["trained"], 1e-9) / 1e12 / args.peak_tflops,
        "peak_tflops": args.peak_tflops, "parameters": counts, "config": config.to_dict(),
        "gist": gist, "held_out": results, "block_sparsity": sparsity,
        "history": state["history"], "args": {k: str(v) for k, v in vars(args).items()}},
        indent=1))
    log("wrote metrics.json")
    pipe.close()  # quietly: left alone, each worker dies on a broken pipe with a traceback
    os._exit(0)  # the worker pool and its feeding thread


if __name__ == "__main__":
    main()
