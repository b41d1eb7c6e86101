#!/usr/bin/env python3
"""A tiny random-weight Llama with the vocabulary of bench/peers/peers.py's checkpoints (128256
ids, the same tokenizer.json, tokenizer_config.json and gist_config.json), written without
torch: the CPU dry run of the service rows (bench/gpu/run.sh PARTS svc-*, ctest
service_bench_dry_run) serves it with gistmem-server --device cpu, so that everything but the
model's size is what the GPU run sees.

    python3 bench/gpu/tiny_checkpoint.py OUT_DIR [--layers 2 --hidden 64 ...]

Weights: bf16 safetensors, values +-[2^-5, 2^-4) with random signs and mantissas (norms 1).
"""

import argparse
import json
import os
import pathlib
import random
import struct
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "peers"))
import peers  # noqa: E402  (stdlib only at import time)


def random_bf16(count, rng):
    """count bf16 values, little-endian: low byte = exponent bit 0 (0) + 7 mantissa bits, high
    byte = sign + exponent bits 7..1 (0x3d: exponent 122, 2^-5)."""
    raw = rng.randbytes(2 * count)
    low = raw[0::2].translate(bytes(b & 0x7F for b in range(256)))
    high = raw[1::2].translate(bytes(0x3D | (b & 0x80) for b in range(256)))
    out = bytearray(2 * count)
    out[0::2], out[1::2] = low, high
    return bytes(out)


def write(out, layers, hidden, heads, kv_heads, intermediate, vocab, positions, seed):
    rng = random.Random(seed)
    head_dim = hidden // heads
    shapes = {"model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden]}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": [hidden],
            p + "post_attention_layernorm.weight": [hidden],
            p + "self_attn.q_proj.weight": [heads * head_dim, hidden],
            p + "self_attn.k_proj.weight": [kv_heads * head_dim, hidden],
            p + "self_attn.v_proj.weight": [kv_heads * head_dim, hidden],
            p + "self_attn.o_proj.weight": [hidden, heads * head_dim],
            p + "mlp.gate_proj.weight": [intermediate, hidden],
            p + "mlp.up_proj.weight": [intermediate, hidden],
            p + "mlp.down_proj.weight": [hidden, intermediate],
        })
    header, blobs, offset = {}, [], 0
    for name, shape in shapes.items():
        count = 1
        for d in shape:
            count *= d
        blob = struct.pack("<H", 0x3F80) * count if name.endswith("norm.weight") else random_bf16(count, rng)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)
    config = dict(peers.SHAPES["1b"], hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  head_dim=head_dim, vocab_size=vocab, max_position_embeddings=positions,
                  tie_word_embeddings=True, architectures=["LlamaForCausalLM"], model_type="llama",
                  hidden_act="silu", attention_bias=False, mlp_bias=False, dtype="bfloat16")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    peers.write_serving_files(out, config)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv_heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--positions", type=int, default=131072)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    write(a.out, a.layers, a.hidden, a.heads, a.kv_heads, a.intermediate, a.vocab, a.positions, a.seed)
    print(f"{a.out}: tiny llama, {a.layers} layers, hidden {a.hidden}, vocab {a.vocab}")


if __name__ == "__main__":
    main()
