#!/usr/bin/env python3
"""The peers of issue 13, measured on the GPU machine in the same run as our engine.

Writes random-weight bf16 checkpoints of the Llama-3.1-8B and Llama-3.2-1B shapes with
save_pretrained (our engine loads them: bench/gpu/run.sh), measures the HBM read rate
(torch.sum over 8 GiB) and the issue's peer rows:

  transformers eager (SDPA, dynamic cache)           batch-1 decode at 2K and 16K, batch-32 at 4K
  transformers static cache + torch.compile          the same rows, decode step compiled with
    (mode="reduce-overhead": CUDA graphs, fullgraph)   CUDA graphs
  16K-token prefill, eager SDPA, logits of the last row only (as our engine's LogitsMode::kLast)

Every row is one JSON line on stdout. Each part runs in a child process with its own time
limit, and the whole run stops starting parts once --budget_s is spent, so it always ends.
Decode steps: warm-up, then CUDA events around each step, the median. Prefill: one warm-up
run, then the median of --prefill_reps runs.

FLOP counts (stated in every prefill line): linear = 2 * (linear weights) * rows, the LM head
for the one logits row; attention = 4 * head_dim * heads * layers * n(n+1)/2 (causal: Q.K and
P.V over the keys at or before each query). Floors: (weight bytes + KV bytes read per step) /
the measured HBM read rate.

Needs torch (CUDA) and transformers 5.x; no internet. Usage:
  python3 bench/peers/peers.py --ckpt_dir /tmp/gistmem-ckpt --budget_s 520 > peers.jsonl
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

SHAPES = {
    # Llama-3.1-8B (config.json of meta-llama/Llama-3.1-8B, rope_parameters as transformers 5).
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
               max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
               rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192},
               bos_token_id=128000, eos_token_id=128001),
    # Llama-3.2-1B.
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
               max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
               rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192},
               bos_token_id=128000, eos_token_id=128001),
}

# (shape, mode, row, batch, context): the table, most important first. Eager rows of a
# shape share one child; every compiled row gets its own (a compile that hangs loses one row).
PLAN = [
    ("8b", "eager", "prefill", 1, 16384),
    ("8b", "eager", "decode", 1, 2048),
    ("8b", "eager", "decode", 1, 16384),
    ("8b", "compile", "decode", 1, 2048),
    ("8b", "compile", "decode", 1, 16384),
    ("8b", "compile", "decode", 32, 4096),
    ("1b", "eager", "decode", 1, 2048),
    ("1b", "eager", "prefill", 1, 16384),
    ("1b", "compile", "decode", 1, 2048),
    ("1b", "compile", "decode", 32, 4096),
    ("1b", "compile", "decode", 1, 16384),
    ("8b", "eager", "decode", 32, 4096),
    ("1b", "eager", "decode", 32, 4096),
]


def emit(record):
    print(json.dumps(record), flush=True)


def shape_numbers(shape):
    s = SHAPES[shape]
    h, i, l = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"]
    hd, nh, nkv, v = s["head_dim"], s["num_attention_heads"], s["num_key_value_heads"], s["vocab_size"]
    per_layer = h * (nh * hd) + 2 * h * (nkv * hd) + (nh * hd) * h + 3 * h * i + 2 * h
    linear = l * (h * (nh * hd) + 2 * h * (nkv * hd) + (nh * hd) * h + 3 * h * i)
    embed = v * h
    head = v * h
    params = l * per_layer + h + embed + (0 if s["tie_word_embeddings"] else head)
    return dict(params=params, linear=linear, head=head, layers=l, heads=nh, head_dim=hd,
                kv_bytes_per_token=l * 2 * nkv * hd * 2)


def prefill_flop(shape, n):
    k = shape_numbers(shape)
    linear = 2 * k["linear"] * n + 2 * k["head"]
    attention = 4 * k["head_dim"] * k["heads"] * k["layers"] * n * (n + 1) // 2
    return linear, attention


# ---------------------------------------------------------------------------------------------
# Child parts (run in their own process).


def cuda_events_ms(fn, warmup, reps):
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        times.append((start, stop))
    torch.cuda.synchronize()
    ms = sorted(a.elapsed_time(b) for a, b in times)
    return ms[len(ms) // 2], ms[0], ms[-1]


def part_env(_args):
    import torch
    import transformers
    p = torch.cuda.get_device_properties(0)
    emit({"part": "env", "gpu": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
          "sms": p.multi_processor_count, "torch": torch.__version__,
          "transformers": transformers.__version__, "cuda": torch.version.cuda,
          "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def part_hbm(_args):
    import torch
    n = 4 * 2**30  # bf16 elements: 8 GiB
    x = torch.ones(n, dtype=torch.bfloat16, device="cuda")
    med, lo, hi = cuda_events_ms(lambda: torch.sum(x), 3, 10)
    emit({"part": "hbm", "what": "torch.sum over 8 GiB bf16", "bytes": 2 * n, "ms": med,
          "ms_min": lo, "ms_max": hi, "tb_per_s": 2 * n / (med * 1e-3) / 1e12,
          "tb_per_s_best": 2 * n / (lo * 1e-3) / 1e12})
    y = torch.empty_like(x)
    med, lo, _ = cuda_events_ms(lambda: y.copy_(x), 2, 5)
    emit({"part": "hbm", "what": "device copy of 8 GiB (read + write)", "bytes": 4 * n, "ms": med,
          "tb_per_s": 4 * n / (med * 1e-3) / 1e12})


def build_model(shape):
    import torch
    import transformers
    config = transformers.LlamaConfig(**SHAPES[shape])
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model.eval()


# ---------------------------------------------------------------------------------------------
# What gistmem-server needs beside config.json and the weights (bench/gpu/service_bench.py): a
# tokenizer.json, tokenizer_config.json (the Llama-3 chat template) and gist_config.json. Plain
# JSON, no torch: bench/gpu/tiny_checkpoint.py writes the same files for the CPU dry run.

GIST_TOKEN = "<|gist|>"


def bytes_to_unicode():
    """GPT-2's byte-level alphabet: byte -> the printable character that stands for it."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def llama3_special_tokens(vocab_size):
    """Llama-3's 256 added tokens, at vocab_size - 256 (128000 for 128256); the last reserved
    one is our gist token (gist_config.json), as gistmem-gpu-bench takes vocab_size - 1."""
    base = vocab_size - 256
    names = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>",
             6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>",
             10: "<|python_tag|>", 255: GIST_TOKEN}
    reserved = iter(range(256))
    out = []
    for i in range(256):
        out.append((base + i, names[i] if i in names else f"<|reserved_special_token_{next(reserved)}|>"))
    return out


def tokenizer_json(vocab_size):
    """A byte-level BPE with one token per byte: no merges, so N bytes of text are N tokens and
    a client controls a context's length exactly. Ids 256..vocab_size-257 are lower-case ASCII
    strings no text encodes to (a random model samples them; they decode to plain text)."""
    alphabet = bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    letters = "abcdefghijklmnopqrstuvwxyz"
    filler, length = [], 2
    while 256 + len(filler) < vocab_size - 256:
        for index in range(len(letters) ** length):
            word, k = "", index
            for _ in range(length):
                word, k = letters[k % 26] + word, k // 26
            filler.append(word)
            if 256 + len(filler) == vocab_size - 256:
                break
        length += 1
    for i, word in enumerate(filler):
        vocab[word] = 256 + i
    added = [{"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, text in llama3_special_tokens(vocab_size)]
    # Llama-3's split (as models/gistmem-16k has it); with no merges it changes no id.
    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
             r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": []},
    }


LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}{% endif %}")


def write_serving_files(out, shape_config):
    """tokenizer.json, tokenizer_config.json and gist_config.json beside a checkpoint (gist
    r = 4, 8, 16, default 8, W = 512, S = 4: the policies of issue 13's rows). Idempotent."""
    vocab_size = shape_config["vocab_size"]
    files = {
        "tokenizer.json": tokenizer_json(vocab_size),
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>", "pad_token": "<|end_of_text|>",
            "clean_up_tokenization_spaces": False,
            "model_max_length": shape_config["max_position_embeddings"],
            "chat_template": LLAMA3_CHAT_TEMPLATE},
        "gist_config.json": {"gist_token_id": vocab_size - 1, "ratios": [4, 8, 16],
                             "default_ratio": 8, "sink_tokens": 4, "window": 512},
    }
    for name, content in files.items():
        with open(os.path.join(out, name), "w") as f:
            json.dump(content, f, ensure_ascii=False)
    try:  # where Hugging Face tokenizers is installed: it must read the file as we mean it
        import tokenizers
        tok = tokenizers.Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
        ids = tok.encode("Hello, world! <|eot_id|>", add_special_tokens=False).ids
        if ids != [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 32, vocab_size - 247]:
            emit({"part": "error", "what": f"tokenizers reads {out}/tokenizer.json differently "
                  f"from gistmem's byte-per-token reading: {ids}"})
    except ImportError:
        pass


def part_checkpoint(args):
    """Writes args.ckpt_dir/llama-<shape>: config.json + safetensors, bf16 random weights."""
    import torch
    for shape in args.shapes:
        out = os.path.join(args.ckpt_dir, f"llama-{shape}")
        done = os.path.join(out, ".complete")
        if os.path.exists(done):
            write_serving_files(out, SHAPES[shape])  # a checkpoint of an earlier run may lack them
            emit({"part": "checkpoint", "shape": shape, "dir": out, "reused": True})
            continue
        start = time.time()
        model = build_model(shape)
        built = time.time() - start
        model.save_pretrained(out, max_shard_size="5GB")
        write_serving_files(out, SHAPES[shape])
        with open(done, "w") as f:
            f.write("written by bench/peers/peers.py\n")
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        emit({"part": "checkpoint", "shape": shape, "dir": out, "bytes": size,
              "params": sum(p.numel() for p in model.parameters()), "build_s": round(built, 1),
              "total_s": round(time.time() - start, 1)})
        del model
        torch.cuda.empty_cache()


def call_model(model, **kwargs):
    # transformers 5 names it logits_to_keep (4.45-4.49: num_logits_to_keep).
    try:
        return model(**kwargs, logits_to_keep=1)
    except TypeError:
        return model(**kwargs)


def make_static_cache(model, batch, length):
    import torch
    from transformers import StaticCache
    try:
        return StaticCache(config=model.config, max_cache_len=length)
    except TypeError:
        return StaticCache(config=model.config, max_batch_size=batch, max_cache_len=length,
                           device="cuda", dtype=torch.bfloat16)


def decode_row(model, shape, mode, batch, ctx, args, fullgraph=True):
    import torch
    vocab = SHAPES[shape]["vocab_size"]
    gen = torch.Generator(device="cuda").manual_seed(1)
    ids = torch.randint(0, vocab, (batch, ctx), device="cuda", generator=gen)
    warmup, reps = (5, args.decode_reps) if mode == "compile" else (2, max(5, args.decode_reps // 2))
    start = time.time()
    with torch.inference_mode():
        if mode == "eager":
            out = call_model(model, input_ids=ids, use_cache=True)
            cache = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)

            def step():
                nonlocal tok
                o = model(input_ids=tok, past_key_values=cache, use_cache=True)
                tok = o.logits[:, -1].argmax(-1, keepdim=True)
        else:
            cache = make_static_cache(model, batch, ctx + warmup + reps + 8)
            try:
                out = call_model(model, input_ids=ids, use_cache=True, past_key_values=cache,
                                 cache_position=torch.arange(ctx, device="cuda"))
                by_position = True
            except TypeError:  # a transformers without cache_position: the cache knows
                cache = make_static_cache(model, batch, ctx + warmup + reps + 8)
                out = call_model(model, input_ids=ids, use_cache=True, past_key_values=cache)
                by_position = False
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            del out

            def one(t, pos):
                extra = {"cache_position": pos} if by_position else {}
                o = model(input_ids=t, past_key_values=cache, use_cache=True, **extra)
                return o.logits[:, -1].argmax(-1, keepdim=True)

            compiled = torch.compile(one, mode="reduce-overhead", fullgraph=fullgraph)
            position = [ctx]

            def step():
                nonlocal tok
                torch.compiler.cudagraph_mark_step_begin()
                pos = torch.tensor([position[0]], device="cuda")
                tok = compiled(tok, pos).clone()
                position[0] += 1
        torch.cuda.synchronize()
        setup = time.time() - start
        med, lo, hi = cuda_events_ms(step, warmup, reps)
    k = shape_numbers(shape)
    weight_bytes = 2 * k["params"]
    kv_bytes = batch * ctx * k["kv_bytes_per_token"]
    emit({"part": "peer", "shape": shape, "impl": "transformers", "mode": mode, "row": "decode",
          "batch": batch, "context": ctx, "ms_per_step": med, "ms_min": lo, "ms_max": hi,
          "tok_per_s": batch / (med * 1e-3), "steps_timed": reps, "warmup": warmup,
          "weight_bytes": weight_bytes, "kv_bytes_per_step": kv_bytes,
          "setup_s": round(setup, 1), **({"fullgraph": fullgraph} if mode == "compile" else {})})


def prefill_row(model, shape, n, args):
    import torch
    vocab = SHAPES[shape]["vocab_size"]
    ids = torch.randint(0, vocab, (1, n), device="cuda",
                        generator=torch.Generator(device="cuda").manual_seed(2))
    with torch.inference_mode():
        med, lo, hi = cuda_events_ms(lambda: call_model(model, input_ids=ids, use_cache=False),
                                     1, args.prefill_reps)
    linear, attention = prefill_flop(shape, n)
    emit({"part": "peer", "shape": shape, "impl": "transformers", "mode": "eager-sdpa",
          "row": "prefill", "batch": 1, "context": n, "ms": med, "ms_min": lo, "ms_max": hi,
          "flop_linear": linear, "flop_attention_causal": attention,
          "tflop_per_s": (linear + attention) / (med * 1e-3) / 1e12,
          "flop_note": "linear 2*W*n + LM head for 1 row; attention 4*hd*H*L*n(n+1)/2"})


def part_rows(args):
    """args.rows: JSON list of [shape, mode, row, batch, ctx], all of one shape."""
    import torch
    rows = json.loads(args.rows)
    model = build_model(rows[0][0])
    for shape, mode, row, batch, ctx in rows:
        try:
            if row == "decode":
                decode_row(model, shape, mode, batch, ctx, args)
            else:
                prefill_row(model, shape, ctx, args)
        except Exception as error:  # one failed row must not lose the others
            emit({"part": "peer", "shape": shape, "mode": mode, "row": row, "batch": batch,
                  "context": ctx, "error": f"{type(error).__name__}: {error}"[:2000]})
            if mode == "compile" and row == "decode":  # graph breaks: compile in pieces
                torch._dynamo.reset()
                try:
                    decode_row(model, shape, mode, batch, ctx, args, fullgraph=False)
                except Exception as again:
                    emit({"part": "peer", "shape": shape, "mode": mode, "row": row,
                          "batch": batch, "context": ctx, "fullgraph": False,
                          "error": f"{type(again).__name__}: {again}"[:2000]})
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# The parent: runs each part in a child with a time limit.


def run_child(argv, limit_s, what):
    with tempfile.TemporaryFile(mode="w+") as out:
        start = time.time()
        proc = subprocess.Popen([sys.executable, __file__] + argv, stdout=out,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=max(1, limit_s))
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the child and its compile workers
            _, err = proc.communicate()
            timed_out = True
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
    for line in lines:
        print(line, flush=True)
    if timed_out or proc.returncode != 0:
        emit({"part": "error", "what": what, "timed_out": timed_out, "rc": proc.returncode,
              "limit_s": round(limit_s), "seconds": round(time.time() - start, 1),
              "stderr_tail": (err or "")[-1500:]})
    return lines


def floors(records, hbm_tb_s):
    for r in records:
        if r.get("part") == "peer" and r.get("row") == "decode" and "ms_per_step" in r:
            floor_ms = (r["weight_bytes"] + r["kv_bytes_per_step"]) / (hbm_tb_s * 1e12) * 1e3
            emit({"part": "floor", "shape": r["shape"], "batch": r["batch"],
                  "context": r["context"], "mode": r["mode"], "floor_ms": floor_ms,
                  "floor_tok_per_s": r["batch"] / (floor_ms * 1e-3),
                  "x_floor": r["ms_per_step"] / floor_ms, "hbm_tb_per_s": hbm_tb_s})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt_dir", default="/tmp/gistmem-ckpt")
    parser.add_argument("--shapes", default="8b,1b")
    parser.add_argument("--budget_s", type=float, default=520, help="the whole run, seconds")
    parser.add_argument("--compile_limit_s", type=float, default=150)
    parser.add_argument("--eager_limit_s", type=float, default=120)
    parser.add_argument("--checkpoint_limit_s", type=float, default=150)
    parser.add_argument("--decode_reps", type=int, default=20)
    parser.add_argument("--prefill_reps", type=int, default=3)
    parser.add_argument("--parts", default="env,hbm,checkpoint,rows",
                        help="which parts, comma-separated: env, hbm, checkpoint, rows")
    parser.add_argument("--hbm_tb_s", type=float, default=0,
                        help="HBM rate for the floors when the hbm part is not run")
    parser.add_argument("--part", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rows", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.shapes = [s for s in args.shapes.split(",") if s]
    if args.part:
        {"env": part_env, "hbm": part_hbm, "checkpoint": part_checkpoint,
         "rows": part_rows}[args.part](args)
        return

    deadline = time.time() + args.budget_s
    left = lambda: deadline - time.time()
    parts = set(args.parts.split(","))
    common = ["--ckpt_dir", args.ckpt_dir, "--shapes", ",".join(args.shapes),
              "--decode_reps", str(args.decode_reps), "--prefill_reps", str(args.prefill_reps)]
    if "env" in parts:
        run_child(["--part", "env"] + common, min(60, left()), "env")
    hbm_tb_s = args.hbm_tb_s or None
    if "hbm" in parts:
        hbm = [json.loads(l) for l in run_child(["--part", "hbm"] + common, min(60, left()), "hbm")]
        hbm_tb_s = next((r["tb_per_s"] for r in hbm if r.get("what", "").startswith("torch.sum")),
                        hbm_tb_s)
    if "checkpoint" in parts:
        run_child(["--part", "checkpoint"] + common, min(args.checkpoint_limit_s, left()),
                  "checkpoint")
    if "rows" not in parts:
        return

    # Group the plan: one child for the eager rows of a shape (consecutive in PLAN), one for each
    # compiled row.
    groups = []
    for entry in PLAN:
        if entry[0] not in args.shapes:
            continue
        if entry[1] == "eager" and groups and groups[-1][0][1] == "eager" and groups[-1][0][0] == entry[0]:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    records = []
    for group in groups:
        limit = args.compile_limit_s if group[0][1] == "compile" else args.eager_limit_s
        if left() < 30:
            emit({"part": "skipped", "rows": group, "why": "budget spent"})
            continue
        lines = run_child(["--part", "rows", "--rows", json.dumps(group)] + common,
                          min(limit, left() - 5), f"rows {group}")
        records += [json.loads(l) for l in lines]
    if hbm_tb_s:
        floors(records, hbm_tb_s)
    emit({"part": "done", "seconds": round(args.budget_s - left(), 1)})


if __name__ == "__main__":
    main()
