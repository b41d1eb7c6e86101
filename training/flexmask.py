"""Fast execution of the gist visibility (gist_mask.py) with flex_attention, for rows that are
whole sessions: every row of a (mode, stream length T) batch has the same layout, so its block
mask is built once and cached.

Gist keys first. RoPE is applied to keys before attention, so the attention does not care in
which order the keys are stored: keys and values are gathered into the order
    [the gist tokens of the stream, in order] + [every other token, in order]
(`perm`). In that order the visible keys of a gist mode are one lower triangle over the
compact gist region (T/(r+1) keys) plus a band of the last W raw tokens and the sinks, so
flex_attention skips whole 128x128 blocks that, with gists interleaved every r+1 tokens,
would all be partially visible and computed. The mask_mod states the same rule as
gist_mask.visibility on the reordered keys; `dense_equivalent` undoes the order so tests can
compare the two exactly.

One mask_mod per stream length reads shared table buffers; choosing a mode copies that mode's
tables into the buffers (a few small copies), so torch.compile sees one unchanging function
and never recompiles for a mode.
"""
import torch

import gist_mask


def layout(t: int, ratio: int, window, sink: int, compact: bool = True):
    """Tables of a stream of t positions: raw tokens with a gist after every `ratio` (none
    when 0), padded past the last whole stream by raw-like slots (pads come last and are seen
    only by pads). Returns dict of int/bool tensors [t] and the window (t+1 = unlimited)."""
    pos = torch.arange(t)
    if ratio:
        is_gist = (pos + 1) % (ratio + 1) == 0
    else:
        is_gist = torch.zeros(t, dtype=torch.bool)
    rank = torch.cumsum((~is_gist).int(), 0, dtype=torch.int32)  # raw tokens at index <= i
    perm = torch.cat([pos[is_gist], pos[~is_gist]]) if compact else pos  # gist keys first
    return {"perm": perm, "kv_pos": perm.int(), "kv_gist": is_gist[perm],
            "kv_rank": rank[perm], "q_rank": rank, "is_gist": is_gist,
            "win": torch.tensor([t + 1 if window is None else window], dtype=torch.int32)}


def make_mask_mod(buf, sink: int):
    kv_pos, kv_gist, kv_rank, q_rank, win = (buf["kv_pos"], buf["kv_gist"], buf["kv_rank"],
                                             buf["q_rank"], buf["win"])

    def mask_mod(b, h, q, kv):
        k = kv_pos[kv]
        recent = kv_rank[kv] > q_rank[q] - win[0]
        return (k <= q) & ((k < sink) | kv_gist[kv] | recent)

    return mask_mod


def dense_equivalent(tables, sink: int):
    """The mask_mod evaluated on every (query, reordered key) and put back in stream order:
    [t, t] bool, to compare with gist_mask.visibility."""
    t = tables["perm"].shape[0]
    mod = make_mask_mod(tables, sink)
    q = torch.arange(t).view(t, 1)
    kv = torch.arange(t).view(1, t)
    reordered = mod(None, None, q, kv)
    out = torch.zeros(t, t, dtype=torch.bool)
    out[:, tables["perm"]] = reordered
    return out


def visible_pairs(tables, sink: int) -> int:
    """How many (query, key) pairs are visible: the attention work that is really needed."""
    t, dev = tables["perm"].shape[0], tables["perm"].device
    total = 0
    for at in range(0, t, 2048):
        q = torch.arange(at, min(t, at + 2048), device=dev).view(-1, 1)
        kv = torch.arange(t, device=dev).view(1, t)
        total += int(make_mask_mod(tables, sink)(None, None, q, kv).sum())
    return total


class MaskCache:
    """(t, ratio, window) -> (BlockMask, perm on the device); one table buffer set per t."""

    def __init__(self, sink: int, device, block: int = 128, compact: bool = True,
                 dense: bool = False):
        self.sink, self.device, self.block, self.compact = sink, device, block, compact
        self.dense = dense
        self.buffers, self.mods, self.masks = {}, {}, {}
        self.current = {}

    def _tables_to(self, tables):
        return {k: v.to(self.device) for k, v in tables.items()}

    def get(self, t: int, ratio: int, window, compact=None):
        compact = self.compact if compact is None else compact
        key = (t, ratio, window) if compact == self.compact else (t, ratio, window, compact)
        if self.dense:  # CPU smoke tests (torch without flex): a [1, t, t] bool mask
            if key not in self.masks:
                tables = self._tables_to(layout(t, ratio, window, self.sink, compact))
                mask = dense_equivalent({k: v.cpu() for k, v in tables.items()}, self.sink)
                self.masks[key] = (mask[None].to(self.device), None, tables, int(mask.sum()))
            return self.masks[key][0]
        from torch.nn.attention.flex_attention import create_block_mask
        if t not in self.buffers:
            self.buffers[t] = self._tables_to(layout(t, ratio, window, self.sink, self.compact))
            self.mods[t] = make_mask_mod(self.buffers[t], self.sink)
        if key not in self.masks:
            tables = self._tables_to(layout(t, ratio, window, self.sink, compact))
            self._fill(t, key, tables)
            bm = create_block_mask(self.mods[t], None, None, t, t, device=self.device,
                                   BLOCK_SIZE=self.block)
            pairs = visible_pairs(tables, self.sink)
            self.masks[key] = (bm, tables["perm"], tables, pairs)
        bm, perm, tables, _ = self.masks[key]
        self._fill(t, key, tables)
        return bm, perm

    def _fill(self, t, key, tables):
        if self.current.get(t) != key:
            for name in ("kv_pos", "kv_gist", "kv_rank", "q_rank", "win"):
                self.buffers[t][name].copy_(tables[name])
            self.current[t] = key

    def pairs(self, t, ratio, window, *compact) -> int:
        return self.masks[(t, ratio, window, *compact)][3]

    def sparsity(self, t, ratio, window, *compact) -> float:
        """Share of the 128x128 blocks of the full square that flex computes."""
        bm = self.masks[(t, ratio, window, *compact)][0]
        n = t // self.block if t % self.block == 0 else t // self.block + 1
        computed = bm.kv_num_blocks.sum().item() + (bm.full_kv_num_blocks.sum().item()
                                                    if bm.full_kv_num_blocks is not None else 0)
        return computed / (n * n)
