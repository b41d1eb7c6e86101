#!/usr/bin/env python3
"""Trains gistmem's small gist model from scratch with the gist mask, ratios mixed per row.

    python3 training/train.py --tokenizer training/tokenizer.json --out training/out \
        --attn flex --compile --minutes 7 [--deadline 480]

Reads training/data/ (data.py), writes OUT/ckpt.pt (bf16 weights, as exported),
OUT/metrics.json and OUT/train.log. export.py turns the checkpoint into models/<name>/.
The run stops on a budget of --minutes of optimisation (the learning rate decays over it),
cut so that training ends --deadline seconds after the start when that comes first.
Smoke test without a GPU or `tokenizers` (dense attention, tiny sizes):
    python3 training/train.py --tokenizer bytes --device cpu --out /tmp/smoke --max-steps 2 \
        --seq 2048 --batch 2 --hidden 64 --layers 2 --dialogues 4100 --dialogue-chars 300,600 \
        --eval-rows 4 --attn flex   # no flex in torch 1.13: the first step falls back to dense
"""
import argparse
import json
import math
import os
import queue
import threading
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

import batches as batches_lib
import evaluate as evaluate_lib
import gist_mask
import model as model_lib
import tokenizer as tokenizer_lib

START = time.time()
HERE = Path(__file__).resolve().parent
SINK, WINDOW, RATIOS, DEFAULT_RATIO = 4, 64, [2, 4, 8], 8
TRAIN_MODES = ["full", "r2", "r4", "r8"]
MODE_WEIGHTS = [0.16, 0.28, 0.28, 0.28]  # most rows compressed; some full to keep that mode


class Log:
    def __init__(self, path: Path):
        self.file = open(path, "a")

    def __call__(self, message: str):
        line = f"[{time.time() - START:7.1f}s] {message}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def lr_at(progress: float, step: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% over the time budget."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def prefetch(sampler, batch_size, depth=8):
    """Batches built on a CPU thread while the GPU works."""
    q = queue.Queue(maxsize=depth)

    def work():
        while True:
            q.put(sampler.batch(batch_size))

    threading.Thread(target=work, daemon=True).start()
    while True:
        yield q.get()


def mask_maker(attn: str, seq: int, device):
    """batch -> what the model's attention takes: a dense bool mask or a flex BlockMask."""
    if attn == "dense":
        return lambda batch: gist_mask.visibility(batch.is_gist, batch.window, SINK)
    state = {}  # set at the first batch, inside the step that may fall back

    def make(batch):
        if not state:
            from torch.nn.attention.flex_attention import create_block_mask
            state["create"] = torch.compile(create_block_mask)
            state["bufs"] = (gist_mask.raw_rank(batch.is_gist), batch.is_gist.clone(),
                             batch.window.clone())
            state["mod"] = gist_mask.flex_mask_mod(*state["bufs"], SINK)
        for buf, value in zip(state["bufs"], (gist_mask.raw_rank(batch.is_gist),
                                              batch.is_gist, batch.window)):
            buf.copy_(value)
        return state["create"](state["mod"], batch.ids.shape[0], None, seq, seq, device=device)
    return make


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=7.0)
    p.add_argument("--deadline", type=float, default=0,
                   help="seconds after the start by which training must end (0: none)")
    p.add_argument("--max-steps", type=int, default=0, help="stop early (smoke tests)")
    p.add_argument("--seq", type=int, default=2048, help="stream length T, gists included")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--attn", choices=["dense", "flex"], default="dense")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dialogues", type=int, default=50000)
    p.add_argument("--dialogue-chars", default="2000,5000",
                   help="min,max characters of a generated dialogue")
    p.add_argument("--dialogue-share", type=float, default=0.45)
    p.add_argument("--eval-rows", type=int, default=128)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "train.log")
    log(f"args {vars(args)}")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True

    tok = tokenizer_lib.load(args.tokenizer)
    specials = tokenizer_lib.special_ids(tok)
    gist_id, bos_id = specials[tokenizer_lib.GIST], specials[tokenizer_lib.BOS]
    pad_id = specials[tokenizer_lib.EOS]
    chars = tuple(int(c) for c in args.dialogue_chars.split(","))
    train = batches_lib.load_split(args.data, tok, "train", args.dialogues, args.seed, chars,
                                   args.workers)
    held = batches_lib.load_split(args.data, tok, "eval", 3 * args.eval_rows, args.seed + 1000,
                                  chars, args.workers)  # eval_rows of them fit whole
    eval_n = gist_mask.raw_budget(args.seq, min(RATIOS))  # fits every mode's stream
    lengths = [len(d.ids) for d in train.dialogues]
    log(f"data: train prose {len(train.prose)} tokens, {len(train.dialogues)} dialogues "
        f"(tokens mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}, "
        f"{sum(n > eval_n for n in lengths)} longer than an r2 row of {eval_n}); "
        f"held-out prose {len(held.prose)} tokens, {len(held.dialogues)} dialogues")

    if cuda:  # only now: the data loading above forks workers, which must not inherit CUDA
        log(f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    all_modes = gist_mask.modes(WINDOW)
    train_modes = [all_modes[m] for m in TRAIN_MODES]
    layout = batches_lib.Layout(args.seq, gist_id, pad_id, SINK, WINDOW)
    sampler = batches_lib.Sampler(train, layout, train_modes, MODE_WEIGHTS,
                                  args.dialogue_share, bos_id, seed=args.seed)
    prose_rows, chat_rows = batches_lib.eval_rows(held, args.eval_rows, eval_n, bos_id, pad_id,
                                                  seed=args.seed)
    log(f"held-out rows: {len(prose_rows)} prose, {len(chat_rows)} dialogues, {eval_n} raw "
        f"tokens each")

    config = model_lib.ModelConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads, max_position_embeddings=args.seq,
        intermediate_size=int(args.hidden * 2.75) // 64 * 64)
    model = model_lib.GistLlama(config).to(device)
    log(f"model {config.to_dict()} parameters {model_lib.count_parameters(model)}")
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), **({"fused": True} if cuda
                                                                     else {}))
    attn, compiled = args.attn, args.compile
    step_model = torch.compile(model) if compiled else model
    make_mask = mask_maker(attn, args.seq, device)

    def train_step(batch, lr):
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = step_model(batch.ids, make_mask(batch))
        per_token = F.cross_entropy(logits.float().transpose(1, 2), batch.labels,
                                    ignore_index=gist_mask.IGNORE, reduction="none")
        valid = batch.labels != gist_mask.IGNORE
        loss = per_token.sum() / valid.sum()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, per_token, valid

    budget = args.minutes * 60
    mode_loss = torch.zeros(len(train_modes), device=device)
    mode_count = torch.zeros(len(train_modes), device=device)
    step, trained, tokens, evaluated_half = 0, 0.0, 0, False
    stream = prefetch(sampler, args.batch)
    log("training")
    while True:
        t0 = time.time()
        batch = next(stream).to(device)
        progress = trained / budget
        lr = lr_at(progress, step, args.lr, args.warmup)
        try:
            loss, grad_norm, per_token, valid = train_step(batch, lr)
        except Exception:  # the first step compiles: fall back to what surely runs
            if step > 0 or (attn == "dense" and not compiled):
                raise
            log(f"first step failed with attn={attn} compile={compiled}:\n"
                f"{traceback.format_exc()}falling back to dense attention without compile")
            optimizer.zero_grad(set_to_none=True)
            attn, compiled, step_model = "dense", False, model
            make_mask = mask_maker(attn, args.seq, device)
            loss, grad_norm, per_token, valid = train_step(batch, lr)
        with torch.no_grad():
            mode_loss.index_add_(0, batch.mode, per_token.sum(1))
            mode_count.index_add_(0, batch.mode, valid.sum(1).float())
        step += 1
        tokens += batch.ids.numel()
        if step % 50 == 0 or step <= 3:
            if cuda:
                torch.cuda.synchronize()
        elapsed = time.time() - t0
        if step > 3:  # the first steps compile; they do not count against the budget
            trained += elapsed
        if step == 3 and args.deadline:
            # Leave room for the half-budget evaluation (about as long as the final one).
            room = args.deadline - (time.time() - START) - 20
            budget = max(1.0, min(budget, room))
            log(f"optimisation budget {budget:.0f}s (the first steps, which compile, ended at "
                f"{time.time() - START:.0f}s)")
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
        late = args.deadline and time.time() - START >= args.deadline
        if trained >= budget or late or (args.max_steps and step >= args.max_steps):
            break

    log(f"done: {step} steps, {trained:.0f}s of training (attn={attn}, compile={compiled}), "
        f"{tokens / 1e6:.1f} M stream tokens after warm-up")
    # The held-out numbers are those of the weights as exported (rounded to bf16).
    state = {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in state.items()})
    results = evaluate_lib.evaluate(model, prose_rows, chat_rows, list(all_modes.values()),
                                    layout)
    log("held-out (final, bf16 weights):\n" + evaluate_lib.table(results))
    gist = {"gist_token_id": gist_id, "ratios": RATIOS, "default_ratio": DEFAULT_RATIO,
            "sink_tokens": SINK, "window": WINDOW}
    torch.save({"model": {k: v.cpu() for k, v in state.items()}, "config": config.to_dict(),
                "gist": gist, "train_seq": args.seq}, args.out / "ckpt.pt")
    (args.out / "metrics.json").write_text(json.dumps(
        {"steps": step, "train_seconds": trained, "attn": attn, "compile": compiled,
         "stream_tokens": tokens, "held_out": results,
         "held_out_rows": {"prose": len(prose_rows), "dialogues": len(chat_rows),
                           "raw_tokens": eval_n},
         "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    log(f"saved {args.out / 'ckpt.pt'}")


if __name__ == "__main__":
    main()
