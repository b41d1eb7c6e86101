#!/usr/bin/env python3
"""Exports a training checkpoint as a Hugging Face Llama directory that gistmem serves.

    python3 training/export.py --ckpt training/out/ckpt.pt --tokenizer TOKENIZER.json \
        --out models/gistmem-tiny [--reference training/reference]

Writes config.json, model*.safetensors (bf16, sharded so every file is <= 16 MiB),
tokenizer.json, tokenizer_config.json (with the Llama-3 chat template), generation_config.json
and gist_config.json. Then checks the export: transformers loads it, its tokenizer renders
chats as dialogues.render does, and its logits under the gist mask (as a 4-D mask) equal the
training model's for every mode. With --reference it also writes a small reference case for
the C++ engine: a stream with gists, its flags and fp32 logits at some positions.
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

import dialogues
import gist_mask
import model as model_lib
import tokenizer as tokenizer_lib

MAX_FILE = 16 * 1024 * 1024
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}")


def hf_config(c: model_lib.ModelConfig, specials: dict) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim, max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False, attention_bias=False,
        mlp_bias=False, hidden_act="silu", initializer_range=c.initializer_range,
        bos_token_id=specials[tokenizer_lib.BOS], eos_token_id=specials[tokenizer_lib.EOT],
        pad_token_id=specials[tokenizer_lib.EOS],
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta})


def write_tokenizer(tok_path: Path, out: Path, max_len: int):
    shutil.copyfile(tok_path, out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokenizer_lib.BOS, "eos_token": tokenizer_lib.EOT,
        "pad_token": tokenizer_lib.EOS, "additional_special_tokens": [tokenizer_lib.GIST],
        "clean_up_tokenization_spaces": False, "model_max_length": max_len,
        "chat_template": CHAT_TEMPLATE}, indent=1))


def check_tokenizer(out: Path):
    """transformers' chat rendering equals the text training read."""
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi! "},
            {"role": "assistant", "content": "Hello."}]
    text = hf_tok.apply_chat_template(chat, tokenize=False)
    assert text == dialogues.render(chat)[0], (text, dialogues.render(chat)[0])


def compare(ours, hf_model, raw_ids, modes, gist_id, sink):
    """Max |logit difference| per mode between the training model and transformers."""
    diffs = {}
    for mode in modes:
        logits, stream, is_gist = gist_mask.stream_logits(ours, raw_ids, mode, gist_id, sink)
        hf_logits = gist_mask.hf_stream_logits(hf_model, stream, is_gist, mode, sink)
        diffs[mode.name] = (logits - hf_logits).abs().max().item()
    return diffs


def write_reference(ours, raw_ids, mode, gist_id, sink, window, into: Path):
    """A stream of the default ratio past the window, and logits every 8th position."""
    logits, stream, is_gist = gist_mask.stream_logits(ours, raw_ids, mode, gist_id, sink)
    positions = list(range(0, stream.shape[0], 8)) + [stream.shape[0] - 1]
    into.mkdir(parents=True, exist_ok=True)
    save_file({"logits": logits[positions].contiguous().cpu()},
              str(into / "reference_logits.safetensors"))
    (into / "reference_case.json").write_text(json.dumps({
        "what": "fp32 logits of the exported bf16 checkpoint (weights widened to fp32) for a "
                "stream with gist tokens under gist_mask.visibility",
        "mode": {"name": mode.name, "ratio": mode.ratio, "window": window, "sink": sink},
        "stream": stream.tolist(), "is_gist": is_gist.int().tolist(),
        "positions": positions, "logits": "reference_logits.safetensors: logits [positions]"}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--reference", type=Path)
    p.add_argument("--text", default="The President spoke to the Congress about the state of "
                   "the Union, the economy, and the plans of the government for the coming year.")
    args = p.parse_args()
    ckpt = torch.load(args.ckpt, map_location="cpu")
    config = model_lib.ModelConfig(**ckpt["config"])
    gist = ckpt["gist"]
    tok = tokenizer_lib.load(args.tokenizer)
    specials = tokenizer_lib.special_ids(tok)
    assert specials[tokenizer_lib.GIST] == gist["gist_token_id"]

    # bf16 on disk; the reference model uses the same rounded weights widened to fp32.
    state = {k: v.to(torch.bfloat16) for k, v in ckpt["model"].items()}
    args.out.mkdir(parents=True, exist_ok=True)
    hf = transformers.LlamaForCausalLM(hf_config(config, specials))
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    hf.to(torch.bfloat16).save_pretrained(args.out, max_shard_size="12MB")
    write_tokenizer(args.tokenizer, args.out, config.max_position_embeddings)
    (args.out / "gist_config.json").write_text(json.dumps(gist, indent=1) + "\n")
    for f in args.out.iterdir():
        assert f.stat().st_size <= MAX_FILE, f"{f} is over 16 MiB"
    check_tokenizer(args.out)

    ours = model_lib.GistLlama(config)
    ours.load_state_dict({k: v.float() for k, v in state.items()})
    ours.eval()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        args.out, dtype=torch.float32, attn_implementation="eager").eval()
    text = " ".join([args.text] * 12)
    raw = [specials[tokenizer_lib.BOS]] + tok.encode(text, add_special_tokens=False).ids
    modes = list(gist_mask.modes(gist["window"]).values())
    diffs = compare(ours, loaded, raw[:200], modes, gist["gist_token_id"], gist["sink_tokens"])
    print(f"max |logits(ours) - logits(transformers)| per mode: {diffs}")
    assert max(diffs.values()) < 1e-3, diffs
    if args.reference:
        mode = gist_mask.modes(gist["window"])[f"r{gist['default_ratio']}"]
        write_reference(ours, raw[:160], mode, gist["gist_token_id"], gist["sink_tokens"],
                        gist["window"], args.reference)
    files = sorted((f.name, f.stat().st_size) for f in args.out.iterdir())
    print(f"exported {args.out}: {files}")


if __name__ == "__main__":
    main()
