"""The gist contract of gist-method.md section 2, in PyTorch: stream layout and visibility.

Training builds every batch with these functions and `stream_logits` is the reference the C++
engine is checked against, so this file is the one definition of the contract on the Python
side. Keep it literal; speed lives elsewhere (the flex mask_mod below restates `visibility`).

Stream layout: a gist token follows every `ratio` raw tokens, counted from the start of the
session; every token, gist or raw, takes the next position (position = stream index).
Visibility: query q sees key k <= q iff k < sink, or k is a gist, or k is a raw token among
the last `window` raw tokens at q (the raw tokens up to and including q).
Labels: a raw token predicts the next raw token (gists are skipped); gists carry no label.
The engine samples a raw token from the logits of the raw token before it, and only then
inserts the gist (it can share a forward step with the sampled token), so this is the
prediction it makes.
"""
from dataclasses import dataclass
from typing import Optional

import torch

IGNORE = -100  # label of positions without loss (gists, padding), as in F.cross_entropy


@dataclass(frozen=True)
class Mode:
    """One way to run a session. ratio 0 = no gist tokens; window None = unlimited."""
    name: str
    ratio: int
    window: Optional[int]


def modes(window: int):
    """The modes the model is trained and evaluated in; `window` is a baseline only (sinks
    plus the last W raw tokens, no gists: what StreamingLLM keeps)."""
    return {
        "full": Mode("full", 0, None),
        "r2": Mode("r2", 2, window),
        "r4": Mode("r4", 4, window),
        "r8": Mode("r8", 8, window),
        "window": Mode("window", 0, window),
    }


def stream_length(raw_count: int, ratio: int) -> int:
    return raw_count + (raw_count // ratio if ratio else 0)


def raw_budget(stream_len: int, ratio: int) -> int:
    """The most raw tokens whose stream fits in stream_len tokens."""
    if not ratio:
        return stream_len
    n = stream_len * ratio // (ratio + 1)
    while stream_length(n + 1, ratio) <= stream_len:
        n += 1
    return n


def insert_gists(raw_ids: torch.Tensor, ratio: int, gist_id: int):
    """raw ids [n] -> (stream ids [m], is_gist [m], raw_pos [n]: stream index of each raw)."""
    n = raw_ids.shape[0]
    j = torch.arange(n)
    raw_pos = j + (j // ratio if ratio else 0)  # gists before raw j: one per full span
    m = stream_length(n, ratio)
    stream = torch.full((m,), gist_id, dtype=raw_ids.dtype)
    stream[raw_pos] = raw_ids
    is_gist = torch.ones(m, dtype=torch.bool)
    is_gist[raw_pos] = False
    return stream, is_gist, raw_pos


def stream_targets(values: torch.Tensor, raw_pos: torch.Tensor, length: int,
                   fill: int = IGNORE) -> torch.Tensor:
    """Per stream position, the value of the next raw token (for the raw token before it):
    values [n] over raw tokens -> [length]; gists and the last raw token get `fill`.
    Used for labels (values = raw ids with IGNORE where a token takes no loss) and for any
    per-target annotation (which answer value a target belongs to)."""
    out = torch.full((length,), fill, dtype=values.dtype)
    out[raw_pos[:-1]] = values[1:]
    return out


def raw_rank(is_gist: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T] int32: the number of raw tokens at stream index <= i."""
    return torch.cumsum((~is_gist).int(), dim=1, dtype=torch.int32)


def visibility(is_gist: torch.Tensor, window, sink: int) -> torch.Tensor:
    """is_gist [B, T] bool, window [B] long (a large value for unlimited) or an int
    -> visible [B, T, T] bool (query, key)."""
    b, t = is_gist.shape
    device = is_gist.device
    window = torch.as_tensor(window, device=device).reshape(-1, 1, 1).expand(b, 1, 1)
    rank = raw_rank(is_gist)
    q = torch.arange(t, device=device).view(1, t, 1)
    k = torch.arange(t, device=device).view(1, 1, t)
    recent = rank[:, None, :] > rank[:, :, None] - window  # raw key among the last W at q
    return (k <= q) & ((k < sink) | is_gist[:, None, :] | recent)


def window_value(mode: Mode, unlimited: int) -> int:
    return mode.window if mode.window is not None else unlimited


def flex_mask_mod(rank: torch.Tensor, is_gist: torch.Tensor, window: torch.Tensor, sink: int):
    """`visibility` as a flex_attention mask_mod (per batch row b): rank = raw_rank(is_gist)
    [B, T], is_gist [B, T] bool and window [B] on the mask's device. The function reads the
    tensors when called, so training refills the same tensors for every batch and hands
    flex one unchanging function (nothing to recompile)."""

    def mask_mod(b, h, q, k):
        recent = rank[b, k] > rank[b, q] - window[b]
        return (k <= q) & ((k < sink) | is_gist[b, k] | recent)

    return mask_mod


def build_stream(raw_ids, mode: Mode, gist_id: int):
    """A session's stream for `mode` (no gists when mode.ratio is 0)."""
    return insert_gists(torch.as_tensor(raw_ids), mode.ratio, gist_id)


@torch.no_grad()
def stream_logits(model, raw_ids, mode: Mode, gist_id: int, sink: int):
    """The reference: logits [m, vocab] (fp32) for the stream of raw_ids under `mode`, with
    positions 0..m-1 and the dense visibility mask. `model` is training/model.py's model.
    Returns (logits, stream ids, is_gist)."""
    stream, is_gist, _ = build_stream(raw_ids, mode, gist_id)
    device = next(model.parameters()).device
    mask = visibility(is_gist[None].to(device), window_value(mode, stream.shape[0] + 1), sink)
    logits = model(stream[None].to(device), mask)
    return logits[0].float(), stream, is_gist


@torch.no_grad()
def hf_stream_logits(hf_model, stream: torch.Tensor, is_gist: torch.Tensor, mode: Mode,
                     sink: int):
    """The same stream through a transformers LlamaForCausalLM (the exported checkpoint):
    the visibility mask passes as a 4-D additive mask, which transformers uses as given."""
    device = next(hf_model.parameters()).device
    mask = visibility(is_gist[None].to(device), window_value(mode, stream.shape[0] + 1), sink)
    dtype = next(hf_model.parameters()).dtype
    additive = torch.zeros(mask.shape, dtype=dtype, device=device)
    additive.masked_fill_(~mask, torch.finfo(dtype).min)
    out = hf_model(input_ids=stream[None].to(device), attention_mask=additive[:, None],
                   position_ids=torch.arange(stream.shape[0], device=device)[None])
    return out.logits[0].float()
