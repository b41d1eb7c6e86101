#!/usr/bin/env python3
"""Exports a training checkpoint as a Hugging Face Llama directory that gistmem serves, and
writes the fixtures that tie transformers to gistmem's C++ engine.

    python3 training/export.py --ckpt training/out/ckpt.pt --tokenizer training/tokenizer.json \
        --out models/gistmem-tiny --fixtures tests/fixtures/gistmem-tiny

Writes into --out: config.json, model*.safetensors (bf16, sharded so every file is <= 16 MiB),
tokenizer.json, tokenizer_config.json (Llama-3 chat template), generation_config.json and
gist_config.json. Into --fixtures (read by tests/unit/shipped_model_test.cc):
  reference_cases.json + reference_logits.safetensors  transformers' fp32 logits (CPU, eager,
      full causal attention, positions 0..n-1) of the exported model for a few token sequences
  tokenizer_cases.json   ids from Hugging Face `tokenizers` for some strings
  chat_template.json     transformers' apply_chat_template renderings and their ids
  gist_reference_case.json + gist_reference_logits.safetensors  a stream with gist tokens at
      the default ratio and its fp32 logits under gist_mask.visibility (for the gist engine)
  long_reference_case.json + long_reference_logits.safetensors  (--long N) transformers' fp32
      logits at every 128th position of an N-token stream, full causal and at the default
      gist ratio (4-D mask), for RoPE and attention far from position 0
  versions.json          library versions
Then checks: transformers loads the export, its chat rendering is the text training read, and
its logits equal the training model's in every mode (the gist masks passed as 4-D masks).
Every file is written before the checks run; a failed check makes the exit status 1.
"""
import argparse
import json
import random
import shutil
import sys
import traceback
from pathlib import Path

import safetensors
import tokenizers
import torch
import transformers
from safetensors.torch import save_file

import dialogues
import gist_mask
import model as model_lib
import tokenizer as tokenizer_lib

# Llama-3's own template (as published with Llama-3-Instruct, but honouring
# add_generation_prompt): gistmem's C++ RenderChat reproduces it (model/tokenizer).
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}")

PROSE = ("The Debian project is an association of individuals who have made common cause to "
         "create a free operating system. Call me Ishmael. Some years ago, never mind how long "
         "precisely, I thought I would sail about a little and see the watery part of the world.")
CHATS = [  # two-turn conversations
    ([{"role": "system", "content": "You are a helpful assistant. Remember what the user "
                                    "tells you."},
      {"role": "user", "content": "My locker code is 4821. "},
      {"role": "assistant", "content": "Got it, I will remember that."},
      {"role": "user", "content": "What is my locker code?"}], True),
    ([{"role": "user", "content": "Hi, I am Ada Lindqvist.\n"},
      {"role": "assistant", "content": "Noted."},
      {"role": "user", "content": "What is my name?"},
      {"role": "assistant", "content": "Your name is Ada Lindqvist."}], False),
]
TOKENIZER_STRINGS = [
    "", " ", "hello world", "Hello, World!", "  leading spaces", "trailing spaces   ",
    "tabs\tand\ttabs", "line one\nline two\r\n", "\n\n\n", "1234567 3.14159 -42 1,000,000",
    "My PIN is XK-40213 and my door code is 555-0142.", "I'm sure you're right; they've gone.",
    "def f(x):\n    return x ** 2\n", "dpkg --build directory && apt-get install -y foo",
    "Ahab's whale, the Pequod, Queequeg.", "caf\u00e9 na\u00efve \u00fcber \u65e5\u672c "
    "\U0001F600", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "text<|gist|>more<|gist|>", "<|end_of_text|>", PROSE,
]


PLAIN_STRINGS = [t for t in TOKENIZER_STRINGS if t.strip() and "<|" not in t]  # no specials


def hf_config(c: model_lib.ModelConfig, specials: dict) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim, max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False, attention_bias=False,
        mlp_bias=False, hidden_act="silu", initializer_range=c.initializer_range,
        bos_token_id=specials[tokenizer_lib.BOS],
        eos_token_id=[specials[tokenizer_lib.EOT], specials[tokenizer_lib.EOS]],
        pad_token_id=specials[tokenizer_lib.EOS],
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta})


def write_model(state, config, specials, out: Path, max_shard: str):
    hf = transformers.LlamaForCausalLM(hf_config(config, specials))
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    hf.generation_config = transformers.GenerationConfig(
        bos_token_id=specials[tokenizer_lib.BOS],
        eos_token_id=[specials[tokenizer_lib.EOT], specials[tokenizer_lib.EOS]],
        pad_token_id=specials[tokenizer_lib.EOS])
    hf.to(torch.bfloat16).save_pretrained(out, max_shard_size=max_shard)


def write_tokenizer(tok_path: Path, out: Path, max_len: int):
    shutil.copyfile(tok_path, out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokenizer_lib.BOS, "eos_token": tokenizer_lib.EOT,
        "pad_token": tokenizer_lib.EOS, "clean_up_tokenization_spaces": False,
        "model_max_length": max_len, "chat_template": CHAT_TEMPLATE}, indent=1) + "\n")


def full_causal_logits(hf_model, ids):
    with torch.no_grad():
        return hf_model(torch.tensor([ids])).logits[0].float().contiguous()


def export_modes(gist):
    """full, r<ratio> for each of gist_config's ratios, and the window baseline."""
    w = gist["window"]
    out = {"full": gist_mask.Mode("full", 0, None)}
    out.update({f"r{r}": gist_mask.Mode(f"r{r}", r, w) for r in gist["ratios"]})
    out["window"] = gist_mask.Mode("window", 0, w)
    return out


def long_ids(tok, specials, n: int):
    """n token ids: BOS, then prose with varied numbers (not one passage repeated) and no
    special tokens (a raw token with the gist id would confuse an engine's test)."""
    rng = random.Random(16)
    ids = [specials[tokenizer_lib.BOS]]
    while len(ids) < n:
        text = f" {PROSE} Entry {rng.randrange(10 ** 6)} of {rng.choice(PLAIN_STRINGS)}"
        ids += tok.encode(text, add_special_tokens=False).ids
    return ids[:n]


def write_long_fixture(hf_model, tok, specials, gist, name, n: int, into: Path):
    """transformers' logits at every 128th position (and the last) of an n-token stream, full
    causal and in the default gist mode: RoPE and attention far from position 0."""
    into.mkdir(parents=True, exist_ok=True)
    mode = export_modes(gist)[f"r{gist['default_ratio']}"]
    raw_full = long_ids(tok, specials, n)
    raw_gist = raw_full[:gist_mask.raw_budget(n, mode.ratio)]
    stream, is_gist, _ = gist_mask.build_stream(raw_gist, mode, gist["gist_token_id"])
    positions = sorted(set(range(0, n, 128)) | {n - 1})
    m = stream.shape[0]  # <= n: the most raw tokens whose stream fits
    gist_positions = sorted(set(range(0, m, 128)) | {m - 1})
    full = full_causal_logits(hf_model, raw_full)[positions]
    gisted = gist_mask.hf_stream_logits(hf_model, stream, is_gist, mode,
                                        gist["sink_tokens"])[gist_positions]
    save_file({"logits_full": full.contiguous(), "logits_gist": gisted.contiguous()},
              str(into / "long_reference_logits.safetensors"))
    (into / "long_reference_case.json").write_text(json.dumps({
        "what": f"fp32 logits from transformers (CPU, eager) of models/{name}: `full_tokens` "
                "(n tokens) under full causal attention at `positions` (logits_full), and "
                "`gist_stream` (at most n) under gist_mask.visibility for `mode` at "
                "`gist_positions` (logits_gist; the mask passed as a 4-D additive mask); "
                "token i at position i",
        "n": n, "mode": {"name": mode.name, "ratio": mode.ratio, "window": gist["window"],
                         "sink": gist["sink_tokens"]},
        "positions": positions, "gist_positions": gist_positions, "full_tokens": raw_full,
        "gist_stream": stream.tolist(),
        "is_gist": is_gist.int().tolist(),
        "logits": "long_reference_logits.safetensors: logits_full, logits_gist "
                  "[positions, vocab]"}) + "\n")


def write_fixtures(hf_model, hf_tok, tok, specials, gist, ours, into: Path, name: str):
    into.mkdir(parents=True, exist_ok=True)
    prose = tok.encode(PROSE, add_special_tokens=False).ids
    chat_text = hf_tok.apply_chat_template(CHATS[0][0], tokenize=False,
                                           add_generation_prompt=True)
    raw = [specials[tokenizer_lib.BOS]] + prose
    r8 = gist_mask.insert_gists(torch.tensor(raw[:35]), 8, specials[tokenizer_lib.GIST])[0]
    rng = random.Random(6)
    sequences = {
        "chat": tok.encode(chat_text, add_special_tokens=False).ids,
        "prose": raw[:24],
        "with_gists": r8.tolist(),  # gist tokens as plain tokens, full causal attention
        "random": [rng.randrange(tok.get_vocab_size()) for _ in range(7)],
        "one": [specials[tokenizer_lib.BOS]],
    }
    cases, tensors = [], {}
    for name, ids in sequences.items():
        tensors[f"logits_{name}"] = full_causal_logits(hf_model, ids)
        cases.append({"name": name, "tokens": ids, "logits": f"logits_{name}"})
    save_file(tensors, str(into / "reference_logits.safetensors"))
    (into / "reference_cases.json").write_text(json.dumps({
        "what": "fp32 logits [tokens, vocab] from transformers (CPU, eager attention, full "
                f"causal, positions 0..n-1) of models/{name} read back as fp32",
        "cases": cases}, indent=1) + "\n")

    tcases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids}
              for t in TOKENIZER_STRINGS]
    (into / "tokenizer_cases.json").write_text(json.dumps(
        {"what": "tokenizers' Tokenizer.encode(text, add_special_tokens=False).ids with "
                 f"models/{name}/tokenizer.json", "cases": tcases},
        ensure_ascii=False, indent=1) + "\n")

    rows = []
    for messages, add_generation_prompt in CHATS:
        for prompt in sorted({add_generation_prompt, not add_generation_prompt}):
            text = hf_tok.apply_chat_template(messages, tokenize=False,
                                              add_generation_prompt=prompt)
            rows.append({"messages": messages, "add_generation_prompt": prompt, "text": text,
                         "ids": tok.encode(text, add_special_tokens=False).ids})
    (into / "chat_template.json").write_text(json.dumps(
        {"what": "apply_chat_template(messages, tokenize=False, add_generation_prompt) of "
                 f"models/{name} and the ids of that text", "rows": rows},
        ensure_ascii=False, indent=1) + "\n")

    mode = export_modes(gist)[f"r{gist['default_ratio']}"]
    long_raw = (raw + prose * 3)[:150]  # past the window: raw entries leave it
    logits, stream, is_gist = gist_mask.stream_logits(ours, long_raw, mode,
                                                      gist["gist_token_id"], gist["sink_tokens"])
    hf_logits = gist_mask.hf_stream_logits(hf_model, stream, is_gist, mode, gist["sink_tokens"])
    positions = sorted(set(range(0, stream.shape[0], 8)) | {stream.shape[0] - 1})
    save_file({"logits": logits[positions].contiguous().cpu()},
              str(into / "gist_reference_logits.safetensors"))
    (into / "gist_reference_case.json").write_text(json.dumps({
        "what": "fp32 logits of the exported checkpoint (training/model.py, weights widened "
                "to fp32) for a stream with gist tokens under gist_mask.visibility, at "
                "`positions`; transformers with that visibility as a 4-D mask differs by "
                "max_abs_diff_vs_transformers",
        "mode": {"name": mode.name, "ratio": mode.ratio, "window": gist["window"],
                 "sink": gist["sink_tokens"]},
        "max_abs_diff_vs_transformers": (logits - hf_logits).abs().max().item(),
        "stream": stream.tolist(), "is_gist": is_gist.int().tolist(), "positions": positions,
        "logits": "gist_reference_logits.safetensors: logits [positions, vocab]"}) + "\n")

    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "safetensors": safetensors.__version__}
    (into / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")


def check_hf_tokenizer(hf_tok, tok):
    """transformers' tokenizer gives the ids of `tokenizers` (what the fixture holds)."""
    for text in TOKENIZER_STRINGS:
        got = hf_tok(text, add_special_tokens=False)["input_ids"]
        want = tok.encode(text, add_special_tokens=False).ids
        assert got == want, (text, got, want)


def check_chat_rendering(hf_tok):
    """transformers' rendering equals the text training read (dialogues.render)."""
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi! "},
            {"role": "assistant", "content": " Hello."}]
    text = hf_tok.apply_chat_template(chat, tokenize=False)
    assert text == dialogues.render(chat)[0], (text, dialogues.render(chat)[0])


def compare_modes(ours, hf_model, raw_ids, gist):
    """Max |logit difference| per mode between the training model and transformers."""
    diffs = {}
    for mode in export_modes(gist).values():
        logits, stream, is_gist = gist_mask.stream_logits(ours, raw_ids, mode,
                                                          gist["gist_token_id"],
                                                          gist["sink_tokens"])
        hf_logits = gist_mask.hf_stream_logits(hf_model, stream, is_gist, mode,
                                               gist["sink_tokens"])
        diffs[mode.name] = (logits - hf_logits).abs().max().item()
    print(f"max |logits(ours) - logits(transformers)| per mode: {diffs}")
    assert max(diffs.values()) < 1e-3, diffs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fixtures", type=Path)
    p.add_argument("--name", help="the model's name in the fixtures' descriptions "
                                  "(default: --out's folder name)")
    p.add_argument("--max-shard", default="12MB", help="save_pretrained's max_shard_size")
    p.add_argument("--max-file-mib", type=float, default=16, help="the file size check")
    p.add_argument("--long", type=int, default=0,
                   help="also write the long fixture (stream of N tokens); 0 = none")
    args = p.parse_args()
    torch.manual_seed(0)
    name = args.name or args.out.name
    ckpt = torch.load(args.ckpt, map_location="cpu")
    config = model_lib.ModelConfig(**ckpt["config"])
    gist = ckpt["gist"]
    tok = tokenizer_lib.load(args.tokenizer)
    specials = tokenizer_lib.special_ids(tok)
    assert specials[tokenizer_lib.GIST] == gist["gist_token_id"]

    # bf16 on disk; everything below reads those rounded weights widened to fp32.
    state = {k: v.to(torch.bfloat16) for k, v in ckpt["model"].items()}
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    write_model(state, config, specials, args.out, args.max_shard)
    write_tokenizer(args.tokenizer, args.out, config.max_position_embeddings)
    (args.out / "gist_config.json").write_text(json.dumps(gist, indent=1) + "\n")
    files = sorted((f.name, f.stat().st_size) for f in args.out.iterdir())
    print(f"exported {args.out}: {files}")

    failures = []

    def check(name, fn, *fn_args):
        try:
            result = fn(*fn_args)
            print(f"check {name}: ok")
            return result
        except Exception:
            failures.append(name)
            print(f"check {name}: FAILED\n{traceback.format_exc()}")
            return None

    def sizes():
        big = [f"{n} ({s} bytes)" for n, s in files if s > args.max_file_mib * 2 ** 20]
        assert not big, f"over {args.max_file_mib} MiB: {big}"

    check("file sizes", sizes)
    ours = model_lib.GistLlama(config)
    ours.load_state_dict({k: v.float() for k, v in state.items()})
    ours.eval()
    hf_model = check("transformers loads the model", lambda: transformers.AutoModelForCausalLM
                     .from_pretrained(args.out, dtype=torch.float32,
                                      attn_implementation="eager").eval())
    hf_tok = check("transformers loads the tokenizer",
                   lambda: transformers.AutoTokenizer.from_pretrained(args.out))
    if hf_tok is not None:
        check("chat rendering equals training's", check_chat_rendering, hf_tok)
        check("transformers' tokenizer equals tokenizers'", check_hf_tokenizer, hf_tok, tok)
    if hf_model is not None:
        raw = ([specials[tokenizer_lib.BOS]] + tok.encode(" ".join([PROSE] * 3)).ids)[:160]
        check("logits per mode equal training's", compare_modes, ours, hf_model, raw, gist)
    if args.fixtures and hf_model is not None and hf_tok is not None:
        check("fixtures written", write_fixtures, hf_model, hf_tok, tok, specials, gist, ours,
              args.fixtures, name)
        if args.long:
            check(f"long fixture ({args.long} tokens) written", write_long_fixture, hf_model,
                  tok, specials, gist, name, args.long, args.fixtures)
    print(f"export checks: {len(failures)} failed {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
