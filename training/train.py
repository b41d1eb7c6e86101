#!/usr/bin/env python3
"""Trains gistmem's small gist model from scratch with the gist mask, ratios mixed per row.

    python3 training/train.py --tokenizer training/tokenizer.json --out training/out \
        --minutes 7 [--attn dense|flex] [--compile]

Reads training/data/ (data.py), writes OUT/ckpt.pt, OUT/metrics.json and OUT/train.log.
export.py turns the checkpoint into models/<name>/. The run stops on a wall-clock budget
(--minutes of optimisation; the learning rate decays over that budget).
"""
import argparse
import json
import math
import queue
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import batches as batches_lib
import evaluate as evaluate_lib
import gist_mask
import model as model_lib
import tokenizer as tokenizer_lib

HERE = Path(__file__).resolve().parent
SINK, WINDOW, RATIOS, DEFAULT_RATIO = 4, 64, [2, 4, 8], 8
TRAIN_MODES = ["full", "r2", "r4", "r8"]
MODE_WEIGHTS = [0.16, 0.28, 0.28, 0.28]  # most rows compressed; some full to keep that mode


class Log:
    def __init__(self, path: Path):
        self.file, self.start = open(path, "a"), time.time()

    def __call__(self, message: str):
        line = f"[{time.time() - self.start:7.1f}s] {message}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def lr_at(progress: float, step: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% over the time budget."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def prefetch(sampler, batch_size, depth=6):
    """Batches built on a CPU thread while the GPU works."""
    q = queue.Queue(maxsize=depth)

    def work():
        while True:
            q.put(sampler.batch(batch_size))

    threading.Thread(target=work, daemon=True).start()
    while True:
        yield q.get()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=7.0)
    p.add_argument("--max-steps", type=int, default=0, help="stop early (smoke tests)")
    p.add_argument("--seq", type=int, default=1024, help="stream length T, gists included")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--attn", choices=["dense", "flex"], default="dense")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--dialogues", type=int, default=80000)
    p.add_argument("--dialogue-share", type=float, default=0.45)
    p.add_argument("--eval-rows", type=int, default=128)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "train.log")
    log(f"args {vars(args)}")
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda")

    tok = tokenizer_lib.load(args.tokenizer)
    specials = tokenizer_lib.special_ids(tok)
    gist_id, bos_id = specials[tokenizer_lib.GIST], specials[tokenizer_lib.BOS]
    pad_id = specials[tokenizer_lib.EOS]
    train = batches_lib.load_split(args.data, tok, "train", args.dialogues, seed=args.seed)
    held = batches_lib.load_split(args.data, tok, "eval", 3 * args.eval_rows,
                                  seed=args.seed + 1000)  # eval_rows of them fit whole
    lengths = [len(d.ids) for d in train.dialogues]
    log(f"data: train prose {len(train.prose)} tokens, {len(train.dialogues)} dialogues "
        f"(tokens mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}, "
        f"{sum(n > gist_mask.raw_budget(args.seq, 2) for n in lengths)} longer than an r2 row); "
        f"held-out prose {len(held.prose)} tokens, {len(held.dialogues)} dialogues")

    all_modes = gist_mask.modes(WINDOW)
    train_modes = [all_modes[m] for m in TRAIN_MODES]
    layout = batches_lib.Layout(args.seq, gist_id, pad_id, SINK, WINDOW)
    sampler = batches_lib.Sampler(train, layout, train_modes, MODE_WEIGHTS,
                                  args.dialogue_share, bos_id, seed=args.seed)
    eval_n = gist_mask.raw_budget(args.seq, min(RATIOS))  # fits every mode's stream
    prose_rows, chat_rows = batches_lib.eval_rows(held, args.eval_rows, eval_n, bos_id, pad_id,
                                                  seed=args.seed)

    config = model_lib.ModelConfig(vocab_size=tok.get_vocab_size(), hidden_size=args.hidden,
                                   num_hidden_layers=args.layers,
                                   intermediate_size=int(args.hidden * 2.75) // 64 * 64)
    model = model_lib.GistLlama(config).to(device)
    log(f"model {config.to_dict()} parameters {model_lib.count_parameters(model)}")
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), fused=True)
    step_model = torch.compile(model) if args.compile else model

    if args.attn == "flex":
        from torch.nn.attention.flex_attention import create_block_mask
        block_mask = torch.compile(create_block_mask)

        def make_mask(batch):
            mod = gist_mask.flex_mask_mod(batch.is_gist, batch.window, SINK)
            return block_mask(mod, batch.ids.shape[0], None, args.seq, args.seq, device=device)
    else:
        def make_mask(batch):
            return gist_mask.visibility(batch.is_gist, batch.window, SINK)

    budget = args.minutes * 60
    mode_loss = torch.zeros(len(train_modes), device=device)
    mode_count = torch.zeros(len(train_modes), device=device)
    step, trained, tokens, raw_targets, evaluated_half = 0, 0.0, 0, 0, False
    stream = prefetch(sampler, args.batch)
    log("training")
    while True:
        t0 = time.time()
        batch = next(stream).to(device)
        progress = trained / budget
        lr = lr_at(progress, step, args.lr, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_model(batch.ids, make_mask(batch))
        per_token = F.cross_entropy(logits.float().transpose(1, 2), batch.labels,
                                    ignore_index=gist_mask.IGNORE, reduction="none")
        valid = batch.labels != gist_mask.IGNORE
        loss = per_token.sum() / valid.sum()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            mode_loss.index_add_(0, batch.mode, per_token.sum(1))
            mode_count.index_add_(0, batch.mode, valid.sum(1).float())
        step += 1
        tokens += batch.ids.numel()
        if step % 50 == 0 or step <= 3:
            torch.cuda.synchronize()
        elapsed = time.time() - t0
        if step > 3:  # the first steps compile; they do not count against the budget
            trained += elapsed
        if step % 50 == 0 or step <= 3:
            per_mode = " ".join(f"{m.name} {(mode_loss[i] / mode_count[i].clamp(min=1)).item():.3f}"
                                for i, m in enumerate(train_modes))
            log(f"step {step} loss {loss.item():.4f} [{per_mode}] lr {lr:.2e} "
                f"grad {grad_norm.item():.2f} trained {trained:.0f}s "
                f"{tokens / max(trained, 1e-9) / 1e3 if step > 3 else 0:.0f}k tok/s")
            mode_loss.zero_()
            mode_count.zero_()
        if step <= 3:
            tokens = 0
        if not evaluated_half and progress >= 0.5:
            evaluated_half = True
            log("held-out at half budget:\n" + evaluate_lib.table(evaluate_lib.evaluate(
                model, prose_rows, chat_rows, list(all_modes.values()), layout)))
        if trained >= budget or (args.max_steps and step >= args.max_steps):
            break

    log(f"done: {step} steps, {trained:.0f}s of training, {tokens / 1e6:.1f} M stream tokens "
        f"after warm-up")
    results = evaluate_lib.evaluate(model, prose_rows, chat_rows, list(all_modes.values()),
                                    layout)
    log("held-out (final):\n" + evaluate_lib.table(results))
    gist = {"gist_token_id": gist_id, "ratios": RATIOS, "default_ratio": DEFAULT_RATIO,
            "sink_tokens": SINK, "window": WINDOW}
    torch.save({"model": model.state_dict(), "config": config.to_dict(), "gist": gist,
                "train_seq": args.seq}, args.out / "ckpt.pt")
    (args.out / "metrics.json").write_text(json.dumps(
        {"steps": step, "train_seconds": trained, "held_out": results, "args": {
            k: str(v) for k, v in vars(args).items()}}, indent=1))
    log(f"saved {args.out / 'ckpt.pt'}")


if __name__ == "__main__":
    main()
