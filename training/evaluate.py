"""Held-out evaluation per mode: prose loss, and recall of the dialogues' answer values.

Every mode reads the same raw rows (n raw tokens each), so the numbers compare the modes on
the same targets:
  prose_loss       mean next-token loss over all raw targets of held-out prose
  prose_far_loss   the same over targets past the first sink + window raw tokens, where the
                   modes differ (before that every mode sees everything)
  value_loss       mean loss on the tokens of the answer values in held-out dialogues
  value_token_acc  greedy (argmax) accuracy on those tokens, teacher-forced
  value_exact      share of answer values whose tokens are all right
The `window` mode (sinks + last W raw tokens, no gists) is the floor: what the gists add.
"""
import torch
import torch.nn.functional as F

import batches as batches_lib
import gist_mask


def _stats(model, rows, mode, layout, batch_size, device):
    totals = {"loss": 0.0, "n": 0, "far_loss": 0.0, "far_n": 0, "v_loss": 0.0, "v_n": 0,
              "v_right": 0, "exact": 0, "values": 0}
    window = gist_mask.window_value(mode, layout.t + 1)
    for at in range(0, len(rows), batch_size):
        chunk = [layout.row(*r, mode) for r in rows[at:at + batch_size]]
        batch = batches_lib.stack(chunk, [window] * len(chunk), [0] * len(chunk)).to(device)
        mask = gist_mask.visibility(batch.is_gist, batch.window, layout.sink)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(batch.ids, mask)
        logits = logits.float()
        valid = batch.labels != gist_mask.IGNORE
        loss = F.cross_entropy(logits.transpose(1, 2), batch.labels.clamp(min=0),
                               reduction="none")
        right = logits.argmax(-1) == batch.labels
        totals["loss"] += loss[valid].sum().item()
        totals["n"] += valid.sum().item()
        far = valid & batch.far
        totals["far_loss"] += loss[far].sum().item()
        totals["far_n"] += far.sum().item()
        is_value = valid & (batch.values > 0)
        totals["v_loss"] += loss[is_value].sum().item()
        totals["v_n"] += is_value.sum().item()
        totals["v_right"] += right[is_value].sum().item()
        for b in range(batch.ids.shape[0]):
            for v in batch.values[b][is_value[b]].unique().tolist():
                sel = is_value[b] & (batch.values[b] == v)
                totals["values"] += 1
                totals["exact"] += int(right[b][sel].all().item())
    return totals


@torch.no_grad()
def evaluate(model, prose_rows, chat_rows, modes, layout, batch_size=16):
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results = {}
    for mode in modes:
        p = _stats(model, prose_rows, mode, layout, batch_size, device)
        c = _stats(model, chat_rows, mode, layout, batch_size, device)
        results[mode.name] = {
            "prose_loss": p["loss"] / max(p["n"], 1),
            "prose_far_loss": p["far_loss"] / max(p["far_n"], 1),
            "value_loss": c["v_loss"] / max(c["v_n"], 1),
            "value_token_acc": c["v_right"] / max(c["v_n"], 1),
            "value_exact": c["exact"] / max(c["values"], 1),
            "values": c["values"],
        }
    model.train(was_training)
    return results


def table(results) -> str:
    lines = [f"{'mode':8s} {'prose_loss':>10s} {'far_loss':>9s} {'value_loss':>10s} "
             f"{'value_tok_acc':>13s} {'value_exact':>11s} {'values':>6s}"]
    for name, r in results.items():
        lines.append(f"{name:8s} {r['prose_loss']:10.4f} {r['prose_far_loss']:9.4f} "
                     f"{r['value_loss']:10.4f} {r['value_token_acc']:13.3f} "
                     f"{r['value_exact']:11.3f} {r['values']:6d}")
    return "\n".join(lines)
