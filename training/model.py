"""A Llama decoder (RMSNorm, RoPE, SwiGLU, GQA) whose parameter names and arithmetic are
those of transformers' LlamaForCausalLM, so export.py saves the state dict as it is.

The attention takes the gist visibility explicitly: a dense boolean mask [B, T, T] (True =
visible) or a flex_attention BlockMask (imported only then: torch 1.13 has no flex).
Positions are the stream indices 0..T-1 (the contract gives every token, gist or raw, the next
position).
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F



@dataclass
class ModelConfig:
    vocab_size: int = 8192
    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 2048  # the stream length trained on: RoPE goes no further
    initializer_range: float = 0.02

    def to_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        # As transformers does: normalise in fp32, cast back, then scale.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(config: ModelConfig, length: int, device):
    """cos, sin [length, head_dim] for positions 0..length-1 (transformers' default RoPE)."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64,
                                                         device=device).float() / dim))
    freqs = torch.outer(torch.arange(length, device=device).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def dense_attention(q, k, v, mask):
    """q [B, H, T, D], k/v [B, Hkv, T, D], mask [B, T, T] bool."""
    groups = q.shape[1] // k.shape[1]
    if hasattr(F, "scaled_dot_product_attention"):
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
    # torch < 2.0 (the developer machine's Debian torch): the same arithmetic by hand.
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


_FLEX = {}


def flex(q, k, v, block_mask):
    """flex_attention, compiled once for calls outside torch.compile (eager flex would build
    the whole score matrix); inside a compiled model the plain function is traced."""
    from torch.nn.attention.flex_attention import flex_attention
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True)
    if "fn" not in _FLEX:
        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    return _FLEX["fn"](q, k, v, block_mask=block_mask, enable_gqa=True)


class Attention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (c.num_attention_heads,
                                                    c.num_key_value_heads, c.head_dim)
        self.q_proj = nn.Linear(c.hidden_size, self.heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * c.head_dim, c.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos.to(q.dtype), sin.to(q.dtype)), apply_rope(k, cos.to(k.dtype),
                                                                           sin.to(k.dtype))
        if isinstance(mask, tuple):  # (BlockMask, perm): keys stored gist-first (flexmask.py)
            block_mask, perm = mask
            k, v = k.index_select(2, perm), v.index_select(2, perm)
            out = flex(q, k, v, block_mask)
        elif type(mask).__name__ == "BlockMask":  # --attn flex; torch >= 2.5 only
            out = flex(q, k, v, mask)
        else:
            out = dense_attention(q, k, v, mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class GistLlama(nn.Module):
    """model.* and lm_head.* as in LlamaForCausalLM (untied embeddings)."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.config = c
        self.model = Body(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # GPT-2's scaling of the residual projections keeps the residual stream's
                # variance flat with depth.
                scale = (2 * self.config.num_hidden_layers) ** -0.5 if name.endswith(
                    ("o_proj.weight", "down_proj.weight")) else 1.0
                nn.init.normal_(p, std=std * scale)

    def hidden(self, input_ids, mask):
        x = self.model.embed_tokens(input_ids)
        cos, sin = rope_tables(self.config, input_ids.shape[1], input_ids.device)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.model.norm(x)

    def forward(self, input_ids, mask):
        """input_ids [B, T] (a stream), mask [B, T, T] bool, a BlockMask, or (BlockMask, perm)
        with keys in the order perm (flexmask.py) -> logits."""
        return self.lm_head(self.hidden(input_ids, mask))


def count_parameters(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    embed = model.model.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    return {"total": total, "non_embedding": total - embed}
