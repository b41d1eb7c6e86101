#!/usr/bin/python3
"""Recall of facts stated early in a conversation, asked back later, measured through the real
gistmem-server for each memory policy (issue 6, evaluation). Also the same after a server
restart between the conversation and the questions (recall after resume).

Run from the repository root with Debian's Python (python3-grpcio, python3-protobuf), after
`clients/python/generate_stubs.sh`:

    /usr/bin/python3 bench/recall_eval.py --per-cell 40 --out bench/results/recall.json

What it does:
 1. Held-out dialogues from training/dialogues.py (imported, not copied): distractor passages
    cut from the corpus's `eval` documents (the 2.5% held out of training), facts and
    questions from its generator, with a seed that training never used (training used
    1*100003+i for its train dialogues and 1001*100003+i for its held-out ones).
    A dialogue is: optional system prompt, 1-2 fact statements per user turn (2-4 facts),
    each acknowledged by the assistant, then 1-3 distractor stretches (a passage shared and
    acknowledged, or a passage the assistant continues), then questions about the facts.
 2. It starts gistmem-server itself (a copy of the binary, its own temporary RocksDB,
    --listen 127.0.0.1:0: loopback only) and, per length bucket, keeps the first
    --per-cell dialogues whose context (everything before the first question) has a raw
    token count inside the bucket's band. The count that decides is the server's (the `full`
    session's GetSessionStats.raw_tokens); candidates are pre-filtered with the same C++
    tokenizer (bench/lm_loss.cc `tokenize`, built by bench/build_lm_loss.sh) when it is
    there, so few sessions are read in vain (the two counts are compared and reported).
 3. For every kept dialogue and every policy it makes one session, feeds the context with
    Append (the dialogue's system prompt as the session's system prompt; user and assistant
    turns with their roles: the same Llama-3 chat text training read), then asks every one of
    the dialogue's questions with Generate (greedy, temperature 0, max_tokens 32), each on a
    ForkSession of the context session (a fork shares the cache, nothing is recomputed, so each
    question is asked right after the context, as the first question would be).
 4. Resume: the server is then stopped (SIGKILL by default, --restart term for SIGTERM) and
    started again on the same store; every context session is asked the same questions again
    (each on a fork of the session, which the server loads back from its store).

Scoring: a question is recalled when the expected value (the fact as stated, e.g.
"Rustie Mbeki", "XK-20391", "Tuesday at 5:30") occurs in the first line of the reply, case
sensitive, not inside a longer word or number (no letter or digit right before or after it).
Accuracy = recalled questions / questions. A dialogue holds 2-4 questions; per-cell counts of
both are reported.

Policies (S = 4 sinks, W = 64 window raw tokens and r as in models/gistmem-16k):
  full          every entry
  gist r=4/r=8  the trained gist tokens
  pool r=4/r=8  the same r and W; spans leaving the window become their mean
  window @r=4/@r=8   sinks + the last W' raw tokens, W' chosen per dialogue so that S + W'
                equals the retained entries of that dialogue's gist session at the end of the
                context (so `window` and `gist` hold the same number of entries when the
                question starts)
and a `prior` row: each question asked in a fresh session with no context at all (what the
model guesses without the fact).

--source heldout (issue 14): conversations from bench/recall_heldout.py instead (fact kinds,
value shapes, phrasings and fillers that training's generators never produced; filler prose
from the held-out documents), in buckets of ~1K, ~4K and ~16K context raw tokens (16K: at most
12900, so that r=4 still fits 16384 positions), 6-12 facts each, all asked at the end; recall
is also reported by distance (raw tokens from the statement to the end of the context, counted
by the server), before and after the restart. Sinks and window come from the model's
gist_config.json. For any model directory:

    /usr/bin/python3 bench/recall_eval.py --source heldout --model models/NAME \
        --per-cell 20 --ratios 4,8 --out bench/results/recall-heldout-NAME.json
"""
import argparse
import concurrent.futures
import datetime
import difflib
import gzip
import hashlib
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "training"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

import dialogues  # noqa: E402  (training/dialogues.py)
import recall_heldout  # noqa: E402  (bench/recall_heldout.py: --source heldout)

from gistmem_client import GistmemClient  # noqa: E402
from gistmem_client._stubs import pb  # noqa: E402

SEED = 20261202      # dialogues; training used 100003 + i and 100103003 + i
SINKS = 4
WINDOW = 64
MAX_TOKENS = 32
# Context raw tokens (BOS, system prompt, statements, distractors; before the first question).
# The longest must leave room for r=4: raw + raw/4 gist positions + question + reply <= 2048.
BUCKETS = {"500": (430, 570), "1000": (880, 1120), "1500": (1380, 1560)}
# --source heldout (issue 14, models with 16384 positions): context bands in raw tokens and the
# generator's target. 16K: the longest context whose r=4 stream, with question and reply,
# still fits 16384 positions (12900 * 1.25 + ~100 < 16384).
HELDOUT_BUCKETS = {"1K": (850, 1200), "4K": (3500, 4500), "16K": (11000, 12900)}
HELDOUT_TARGET = {"1K": 1000, "4K": 4000, "16K": 12000}
DISTANCES = [(0, 512, "<512"), (512, 2048, "512-2K"), (2048, 8192, "2K-8K"),
             (8192, 1 << 30, ">=8K")]


def generator_chars(low, high):
    """Generator max_chars (whole dialogue, questions included) whose contexts mostly land in
    [low, high] raw tokens: about 4.1 characters a token plus the questions' share (measured
    on the held-out documents)."""
    mid = 4.1 * (low + high) / 2 + 450
    return int(0.95 * mid), int(1.05 * mid)

_LISTENING = re.compile(r"listening on (\S+:\d+)")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- server

class Server:
    """gistmem-server as a child process on loopback, its own db; restartable."""

    def __init__(self, binary, model, db, threads, log_path):
        self.command = [binary, "--model", model, "--db", db, "--listen", "127.0.0.1:0",
                        "--log_level", "warn", "--max_sessions_in_memory", "256"]
        if threads:
            self.command += ["--threads", str(threads)]
        self.log_path = log_path
        self.process = None
        self.address = None

    def start(self, timeout=120):
        log_file = open(self.log_path, "a")
        log_file.write(f"$ {' '.join(self.command)}\n")
        log_file.flush()
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=log_file,
                                        text=True)
        lines = queue.Queue()

        def read():
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)
        threading.Thread(target=read, daemon=True).start()
        deadline = time.time() + timeout
        while True:
            line = lines.get(timeout=max(1.0, deadline - time.time()))
            if line is None:
                raise RuntimeError(f"server exited ({self.process.wait()}) before listening; "
                                   f"see {self.log_path}")
            match = _LISTENING.search(line)
            if match:
                self.address = match.group(1)
                return self.address

    def stop(self, how):
        if self.process is None or self.process.poll() is not None:
            return None
        if how == "kill":
            self.process.kill()
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


# -------------------------------------------------------------------------------- dialogues

def load_generator_inputs():
    data = os.path.join(ROOT, "training", "data")
    corpus = os.path.join(data, "corpus.jsonl.gz")
    if not os.path.exists(corpus):
        sys.exit(f"{corpus} is missing: run `python3 training/data.py` first")
    docs = [json.loads(line) for line in gzip.open(corpus, "rt")]
    docs = [d for d in docs if d["split"] == "eval"]
    lists = json.loads(open(os.path.join(data, "lists.json")).read())
    return docs, lists


def split_dialogue(messages):
    """(system prompt, context messages, [(question, expected value, gold answer)])."""
    system = ""
    body = list(messages)
    if body and body[0]["role"] == "system":
        system = body.pop(0)["content"].strip()
    first_q = next(i for i in range(len(body) - 1)
                   if body[i]["role"] == "user" and "value" in body[i + 1])
    context = [{"role": m["role"], "content": m["content"].strip(),
                **({"facts": m["facts"]} if "facts" in m else {})} for m in body[:first_q]]
    questions = []
    for i in range(first_q, len(body) - 1, 2):
        assert body[i]["role"] == "user" and "value" in body[i + 1]
        questions.append({"question": body[i]["content"].strip(),
                          "value": body[i + 1]["value"],
                          "gold": body[i + 1]["content"].strip(),
                          **{k: body[i + 1][k] for k in ("fact_id", "kind") if k in body[i + 1]}})
    return system, context, questions


def first_line(reply):
    return reply.strip().split("\n", 1)[0].strip() if reply.strip() else ""


def recalled(value, reply):
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(value) + r"(?![A-Za-z0-9])",
                     first_line(reply)) is not None


def answered_value(reply):
    """What the reply gives as the value: the first line after the answer templates' verb
    ("Your X is V.", "You are V.", "You live in V.", "Your pet is called V.",
    "Your meeting is on V."), without the final period."""
    line = first_line(reply).rstrip(".").strip()
    for marker in (" is called ", " is on ", " live in ", " is ", " are "):
        at = line.rfind(marker)
        if at >= 0:
            return line[at + len(marker):].strip()
    return line


def similarity(value, reply):
    """Secondary, graded score in [0, 1]: difflib's ratio between the expected value and the
    answered one (case folded); 1 = the same string."""
    return difflib.SequenceMatcher(None, value.lower(), answered_value(reply).lower()).ratio()


# --------------------------------------------------------------------------------- policies

def policy_message(name, window_entries=None):
    kind, _, arg = name.partition("-")
    if kind == "full":
        return pb.MemoryPolicy(kind=pb.MemoryPolicy.FULL)
    if kind in ("gist", "pool"):
        r = int(arg[1:])
        return pb.MemoryPolicy(kind=getattr(pb.MemoryPolicy, kind.upper()), ratio=r,
                               window=WINDOW, sink_tokens=SINKS)
    if kind == "window":
        return pb.MemoryPolicy(kind=pb.MemoryPolicy.WINDOW, window=window_entries - SINKS,
                               sink_tokens=SINKS)
    raise ValueError(name)


def stats_dict(s):
    return {"stream_tokens": s.stream_tokens, "raw_tokens": s.raw_tokens,
            "retained_entries": s.retained_entries, "sink_entries": s.sink_entries,
            "gist_entries": s.gist_entries, "pooled_entries": s.pooled_entries,
            "window_entries": s.window_entries}


class Evaluator:
    def __init__(self, client, ratios):
        self.client = client
        self.ratios = ratios
        # Order matters: window @r needs gist r's retained count.
        self.policies = (["full"] + [f"gist-r{r}" for r in ratios] +
                         [f"pool-r{r}" for r in ratios] + [f"window-at-r{r}" for r in ratios])

    def new_context_session(self, system, context, policy):
        sid = self.client.create_session(system, policy=policy).session_id
        for m in context:
            self.client.append(sid, m["content"], role=m["role"])
        return sid

    def ask(self, sid, questions):
        """Every question on its own fork of `sid`, greedy; forks are deleted."""
        out = []
        for q in questions:
            fork = self.client.fork_session(sid).session_id
            started = time.time()
            reply = self.client.generate(fork, q["question"], role="user", temperature=0.0,
                                         max_tokens=MAX_TOKENS).wait()
            after = stats_dict(self.client.stats(fork))
            self.client.delete_session(fork)
            out.append({"reply": reply.text, "finish": reply.end.finish_reason,
                        "prompt_tokens": reply.end.usage.prompt_tokens,
                        "completion_tokens": reply.end.usage.completion_tokens,
                        "stats_after_reply": after, "seconds": time.time() - started,
                        "recalled": recalled(q["value"], reply.text),
                        "similarity": similarity(q["value"], reply.text)})
        return out

    def phase_a(self, item):
        """All policies of one sized dialogue: context sessions, answers, kept sessions."""
        system, context, questions = item["system"], item["context"], item["questions"]
        sessions, results = {"full": item["full_sid"]}, {}
        retained = {}
        for name in self.policies:
            if name == "full":
                sid = sessions["full"]
            else:
                if name.startswith("window-at-r"):
                    budget = retained[f"gist-r{name.rsplit('r', 1)[1]}"]
                    policy = policy_message("window", window_entries=budget)
                else:
                    policy = policy_message(name)
                sid = self.new_context_session(system, context, policy)
                sessions[name] = sid
            st = stats_dict(self.client.stats(sid))
            retained[name] = st["retained_entries"]
            results[name] = {"session_id": sid, "stats_at_context": st,
                             "answers": self.ask(sid, questions)}
        # No context at all: what the model guesses.
        prior = []
        for q in questions:
            sid = self.client.create_session("", policy=pb.MemoryPolicy(
                kind=pb.MemoryPolicy.FULL)).session_id
            reply = self.client.generate(sid, q["question"], role="user", temperature=0.0,
                                         max_tokens=MAX_TOKENS).wait()
            self.client.delete_session(sid)
            prior.append({"reply": reply.text, "recalled": recalled(q["value"], reply.text),
                          "similarity": similarity(q["value"], reply.text)})
        results["prior"] = {"answers": prior}
        return results

    def phase_b(self, item):
        """After the restart: the same questions on forks of the stored context sessions."""
        out = {}
        for name in self.policies:
            sid = item["results"][name]["session_id"]
            st = stats_dict(self.client.stats(sid))
            out[name] = {"stats_at_context": st, "answers": self.ask(sid, item["questions"])}
            self.client.delete_session(sid)
        return out


# ------------------------------------------------------------------------------------- main

def token_counts(binary, model, candidates):
    """Raw tokens of each candidate's context (rendered as the server renders it: BOS, system
    prompt, turns), by the C++ tokenizer through bench/lm_loss.cc's `tokenize`; None when that
    binary is missing (the server's count then decides alone)."""
    if not binary or not os.path.exists(binary):
        return [None] * len(candidates)
    import numpy as np
    work = tempfile.mkdtemp(prefix="gistmem-recall-tok-")
    try:
        texts = []
        for system, context, _ in candidates:
            msgs = ([{"role": "system", "content": system}] if system else []) + context
            texts.append(dialogues.render(msgs)[0])
        with open(os.path.join(work, "texts.bin"), "wb") as f:
            f.write(b"\0".join(t.encode("utf-8") for t in texts))
        subprocess.run([binary, "tokenize", model, os.path.join(work, "texts.bin"),
                        os.path.join(work, "ids.i32")], check=True, capture_output=True)
        ids = np.fromfile(os.path.join(work, "ids.i32"), dtype=np.int32)
        ends = np.where(ids == 1)[0]  # tokenize appends <|end_of_text|> (id 1) to each text
        return [int(x) for x in np.diff(np.concatenate([[-1], ends])) - 1]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def size_candidates(client, generator, bucket, need, pool, deadline, tokenizer, model):
    """The first `need` candidates (in generation order) whose context is in the band; each
    kept one keeps its `full` session. Candidates are first filtered by the C++ tokenizer's
    count (when available), then read by the server, whose count decides."""
    low, high = BUCKETS[bucket]
    kept, stats = [], {"generated": 0, "read_by_server": 0, "count_mismatches": 0}

    def read(candidate):
        system, context, questions = candidate
        sid = client.create_session(system, policy=pb.MemoryPolicy(
            kind=pb.MemoryPolicy.FULL)).session_id
        stated = {}  # fact id -> raw tokens once its statement is in
        for m in context:
            client.append(sid, m["content"], role=m["role"])
            if m.get("facts"):
                at = client.stats(sid).raw_tokens
                stated.update({f: at for f in m["facts"]})
        raw = client.stats(sid).raw_tokens
        if not low <= raw <= high:
            client.delete_session(sid)
            return None, raw
        for q in questions:  # raw tokens from the end of the statement to the question
            if q.get("fact_id") in stated:
                q["distance"] = raw - stated[q["fact_id"]]
        return sid, raw

    while len(kept) < need and time.time() < deadline:
        batch = [split_dialogue(generator.dialogue()) for _ in range(64)]
        stats["generated"] += len(batch)
        counts = token_counts(tokenizer, model, batch)
        batch = [(c, n) for c, n in zip(batch, counts) if n is None or low <= n <= high]
        batch = batch[:max(0, need - len(kept))]
        stats["read_by_server"] += len(batch)
        for (candidate, expected), (sid, raw) in zip(
                batch, pool.map(read, [c for c, _ in batch])):
            if expected is not None and expected != raw:
                stats["count_mismatches"] += 1
            if sid is None:
                continue
            if len(kept) >= need:
                client.delete_session(sid)
                continue
            system, context, questions = candidate
            kept.append({"bucket": bucket, "index": len(kept), "system": system,
                         "context": context, "questions": questions, "full_sid": sid,
                         "context_raw_tokens": raw})
    stats["kept"] = len(kept)
    return kept, stats


def summarize(items, policies, choice_values):
    """Per bucket and policy: accuracy (normal and after resume), counts, entries; also split
    into `choice` facts (a value from a short list: favorites, US states, so guessable) and
    `open` ones (names, codes, dates, times)."""
    table = {}
    for bucket in BUCKETS:
        rows = [it for it in items if it["bucket"] == bucket]
        if not rows:
            continue
        table[bucket] = {"dialogues": len(rows),
                         "questions": sum(len(it["questions"]) for it in rows),
                         "context_raw_tokens": {
                             "mean": statistics.mean(it["context_raw_tokens"] for it in rows),
                             "min": min(it["context_raw_tokens"] for it in rows),
                             "max": max(it["context_raw_tokens"] for it in rows)},
                         "policies": {}}
        for name in policies + ["prior"]:
            ans = [a for it in rows for a in it["results"][name]["answers"]]
            cell = {"recalled": sum(a["recalled"] for a in ans), "questions": len(ans)}
            cell["accuracy"] = cell["recalled"] / max(1, len(ans))
            cell["similarity_mean"] = statistics.mean(a["similarity"] for a in ans)
            values = [q["value"] for it in rows for q in it["questions"]]
            for group, want in (("choice", True), ("open", False)):
                picked = [a for a, v in zip(ans, values) if (v in choice_values) == want]
                cell[f"{group}_questions"] = len(picked)
                cell[f"{group}_recalled"] = sum(a["recalled"] for a in picked)
            if name != "prior":
                ctx = [it["results"][name]["stats_at_context"] for it in rows]
                cell["retained_at_context_mean"] = statistics.mean(
                    s["retained_entries"] for s in ctx)
                cell["stream_at_context_mean"] = statistics.mean(s["stream_tokens"] for s in ctx)
                cell["retained_after_reply_mean"] = statistics.mean(
                    a["stats_after_reply"]["retained_entries"] for a in ans)
                cell["max_stream_after_reply"] = max(
                    a["stats_after_reply"]["stream_tokens"] for a in ans)
                if all("resume" in it for it in rows):
                    res = [a for it in rows for a in it["resume"][name]["answers"]]
                    cell["resume_recalled"] = sum(a["recalled"] for a in res)
                    cell["resume_accuracy"] = cell["resume_recalled"] / max(1, len(res))
                    cell["resume_similarity_mean"] = statistics.mean(
                        a["similarity"] for a in res)
                    cell["resume_same_reply"] = sum(
                        a["reply"] == b["reply"] for a, b in zip(ans, res))
                    cell["resume_same_stats"] = sum(
                        it["resume"][name]["stats_at_context"] ==
                        it["results"][name]["stats_at_context"] for it in rows)
            dist = [q.get("distance") for it in rows for q in it["questions"]]
            if name != "prior" and all(d is not None for d in dist):
                cell["by_distance"] = {}
                for lo, hi, label in DISTANCES:
                    picked = [a for a, d in zip(ans, dist) if lo <= d < hi]
                    cell["by_distance"][label] = [sum(a["recalled"] for a in picked),
                                                  len(picked)]
                if all("resume" in it for it in rows):
                    res = [a for it in rows for a in it["resume"][name]["answers"]]
                    cell["resume_by_distance"] = {}
                    for lo, hi, label in DISTANCES:
                        picked = [a for a, d in zip(res, dist) if lo <= d < hi]
                        cell["resume_by_distance"][label] = [sum(a["recalled"] for a in picked),
                                                             len(picked)]
            table[bucket]["policies"][name] = cell
    return table


def markdown(table, ratios):
    lines = []
    for bucket, t in table.items():
        c = t["context_raw_tokens"]
        lines.append(f"\n**~{bucket} tokens** (context {c['min']}-{c['max']} raw tokens, mean "
                     f"{c['mean']:.0f}; {t['dialogues']} dialogues, {t['questions']} "
                     f"questions per cell)\n")
        lines.append("| policy | entries at question (mean) | recall | recall / full's | "
                     "recall after restart | same reply after restart | value similarity |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        full = t["policies"]["full"]["accuracy"]
        for name, cell in t["policies"].items():
            acc = f"{cell['accuracy']:.3f} ({cell['recalled']}/{cell['questions']})"
            if name == "prior":
                lines.append(f"| prior (no context) | 0 | {acc} | | | | "
                             f"{cell['similarity_mean']:.3f} |")
                continue
            rel = f"{cell['accuracy'] / full:.2f}" if full else "n/a"
            res = (f"{cell['resume_accuracy']:.3f} ({cell['resume_recalled']}/"
                   f"{cell['questions']})" if "resume_accuracy" in cell else "-")
            same = (f"{cell['resume_same_reply']}/{cell['questions']}"
                    if "resume_same_reply" in cell else "-")
            lines.append(f"| {name} | {cell['retained_at_context_mean']:.0f} | {acc} | {rel} | "
                         f"{res} | {same} | {cell['similarity_mean']:.3f} |")
        with_dist = {n: c for n, c in t["policies"].items() if "by_distance" in c}
        if with_dist:
            lines.append("\nRecall by distance (raw tokens from the fact's statement to the "
                         "question), before / after the restart:\n")
            lines.append("| policy | " + " | ".join(d[2] for d in DISTANCES) + " |")
            lines.append("| --- |" + " ---: |" * len(DISTANCES))
            for name, cell in with_dist.items():
                parts = []
                for label in (d[2] for d in DISTANCES):
                    k, n = cell["by_distance"][label]
                    after = cell.get("resume_by_distance", {}).get(label)
                    parts.append(f"{k}/{n}" + (f" / {after[0]}/{after[1]}" if after else ""))
                lines.append(f"| {name} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def wilson(k, n, z=1.96):
    """95% Wilson interval of k successes in n."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def choice_value_set(lists):
    """Values drawn from a short list (favorites, US states): guessable without memory."""
    return set(lists["states"]) | set(
        dialogues.COLORS + dialogues.FOODS + dialogues.ANIMALS + dialogues.DRINKS +
        dialogues.INSTRUMENTS + dialogues.SPORTS)


def pooled_report(items, policies, choice_values):
    """All buckets together: recall with 95% intervals, by fact group, and paired counts of
    gist r against window and pool at the same r (questions one recalls and the other not)."""
    names = policies + ["prior"]
    lines = ["\n**All lengths pooled**\n",
             "| policy | recall (95% interval) | open facts | choice facts | recall / full's |",
             "| --- | ---: | ---: | ---: | ---: |"]
    hits = {}
    for name in names:
        hits[name] = [a["recalled"] for it in items for a in it["results"][name]["answers"]]
    open_mask = [q["value"] not in choice_values for it in items for q in it["questions"]]
    full = sum(hits["full"]) / len(hits["full"])
    for name in names:
        h, n = sum(hits[name]), len(hits[name])
        lo, hi = wilson(h, n)
        o = [x for x, m in zip(hits[name], open_mask) if m]
        c = [x for x, m in zip(hits[name], open_mask) if not m]
        ratio = f"{h / n / full:.2f}" if full else "n/a"  # full recalled nothing
        lines.append(f"| {name} | {h / n:.3f} ({h}/{n}; {lo:.3f}-{hi:.3f}) | {sum(o)}/{len(o)} | "
                     f"{sum(c)}/{len(c)} | {ratio} |")
    lines += ["\nPaired, same questions (b = only the first recalls, c = only the second; "
              "exact two-sided sign test on b vs c):\n",
              "| comparison | both | b | c | neither | p |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for first in [p for p in policies if p.startswith("gist")]:
        r = first.split("-r")[1]
        for second in ("full", f"pool-r{r}", f"window-at-r{r}", "prior"):
            a, b = hits[first], hits[second]
            both = sum(x and y for x, y in zip(a, b))
            only_a = sum(x and not y for x, y in zip(a, b))
            only_b = sum(y and not x for x, y in zip(a, b))
            lines.append(f"| {first} vs {second} | {both} | {only_a} | {only_b} | "
                         f"{len(a) - both - only_a - only_b} | {sign_test(only_a, only_b):.3g} |")
    return "\n".join(lines)


def sign_test(b, c):
    """Exact two-sided binomial (p = 1/2) test of b against c."""
    from math import comb
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


def report(path):
    """Reprints the tables of a finished run from its two files."""
    summary = json.load(open(path))
    items_path = re.sub(r"\.json$", "", path) + ".items.json.gz"
    items = json.load(gzip.open(items_path, "rt"))
    policies = [p for p in next(iter(summary["summary"].values()))["policies"] if p != "prior"]
    print(markdown(summary["summary"], None))
    print(pooled_report(items, policies, choice_value_set(load_generator_inputs()[1])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=os.path.join(ROOT, "build/service/gistmem-server"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models/gistmem-16k"))
    ap.add_argument("--per-cell", type=int, default=40, help="dialogues per length bucket")
    ap.add_argument("--buckets", default="", help="default: every bucket of --source")
    ap.add_argument("--source", choices=["training", "heldout"], default="training",
                    help="training: training/dialogues.py's generator, ~500-1500 tokens "
                         "(issue 6); heldout: bench/recall_heldout.py, templates and fact "
                         "kinds training never produced, ~1K/4K/16K tokens (issue 14)")
    ap.add_argument("--ratios", default="4,8")
    ap.add_argument("--restart", choices=["kill", "term", "none"], default="kill",
                    help="how the server is stopped before the resume questions")
    ap.add_argument("--concurrency", type=int, default=4,
                    help="dialogues in flight (the server batches their steps)")
    ap.add_argument("--threads", type=int, default=0, help="server --threads (0: every core)")
    ap.add_argument("--max-minutes", type=float, default=30,
                    help="no new dialogue starts after this; cells then hold fewer")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--tokenizer", default="/tmp/gistmem-lm-loss/gistmem-lm-loss",
                    help="gistmem-lm-loss (bench/build_lm_loss.sh) to pre-count candidates' "
                         "tokens; missing = the server's count only (more rejected reads)")
    ap.add_argument("--out", default="", help="JSON summary; every reply goes to "
                    "OUT-without-.json + .items.json.gz")
    ap.add_argument("--keep-db", action="store_true")
    ap.add_argument("--report", default="", help="only reprint the tables of a finished run "
                    "(its --out JSON; the .items.json.gz beside it)")
    args = ap.parse_args()
    if args.report:
        report(args.report)
        return
    global BUCKETS, SINKS, WINDOW
    if args.source == "heldout":
        BUCKETS = HELDOUT_BUCKETS
    buckets = args.buckets.split(",") if args.buckets else list(BUCKETS)
    ratios = [int(r) for r in args.ratios.split(",")]
    gist_config = os.path.join(args.model, "gist_config.json")
    if os.path.exists(gist_config):  # the policies use the model's trained sinks and window
        g = json.load(open(gist_config))
        SINKS, WINDOW = g.get("sink_tokens", SINKS), g.get("window", WINDOW)
    started = time.time()
    deadline = started + 60 * args.max_minutes

    docs, lists = load_generator_inputs()
    generators = {}
    for i, b in enumerate(buckets):
        rng = random.Random(args.seed * 10 + i)
        if args.source == "heldout":
            generators[b] = recall_heldout.Generator(docs, lists, rng, HELDOUT_TARGET[b])
            continue
        chars = generator_chars(*BUCKETS[b])
        generators[b] = dialogues.Generator(docs, lists, rng, max_chars=chars)

    work = tempfile.mkdtemp(prefix="gistmem-recall-")
    # A private copy of the binary: another build in the tree cannot swap it mid-run.
    binary = os.path.join(work, "gistmem-server")
    shutil.copy2(args.server, binary)
    server_sha = hashlib.sha256(open(binary, "rb").read()).hexdigest()
    server = Server(binary, args.model, os.path.join(work, "db"), args.threads,
                    os.path.join(work, "server.log"))
    items, sizing = [], {}
    try:
        address = server.start()
        log(f"server on {address}, work dir {work}")
        client = GistmemClient(address, timeout=300)
        evaluator = Evaluator(client, ratios)
        pool = concurrent.futures.ThreadPoolExecutor(args.concurrency)
        t0 = time.time()
        for b in buckets:
            kept, sizing[b] = size_candidates(client, generators[b], b, args.per_cell, pool,
                                              deadline, args.tokenizer, args.model)
            items += kept
            log(f"bucket {b}: {sizing[b]}")
        # Phase A, round robin over the buckets so a deadline cuts every bucket alike.
        order = sorted(items, key=lambda it: (it["index"], buckets.index(it["bucket"])))
        done = []

        def run_a(item):
            if time.time() > deadline:
                return None
            item["results"] = evaluator.phase_a(item)
            return item
        for n, item in enumerate(pool.map(run_a, order)):
            if item is None:
                continue
            done.append(item)
            if n % 10 == 0:
                log(f"phase A: {n + 1}/{len(order)} dialogues")
        skipped = [it for it in order if "results" not in it]
        for it in skipped:
            client.delete_session(it["full_sid"])
        # Equal N in every bucket: drop the surplus of buckets the deadline cut less.
        per_bucket = min(sum(1 for it in done if it["bucket"] == b) for b in buckets)
        keep = []
        for b in buckets:
            keep += [it for it in done if it["bucket"] == b][:per_bucket]
        items = keep
        time_a = time.time() - t0
        log(f"phase A done in {time_a:.0f} s, {per_bucket} dialogues per bucket")

        time_b = 0.0
        restart = {}
        if args.restart != "none":
            client.close()
            t1 = time.time()
            restart["exit_status"] = server.stop(args.restart)
            address = server.start()
            restart["seconds"] = time.time() - t1
            log(f"server stopped ({args.restart}, status {restart['exit_status']}) and "
                f"restarted on {address}")
            client = GistmemClient(address, timeout=300)
            evaluator.client = client
            t2 = time.time()

            def run_b(item):
                item["resume"] = evaluator.phase_b(item)
                return item
            list(pool.map(run_b, items))
            time_b = time.time() - t2
            log(f"phase B done in {time_b:.0f} s")
        pool.shutdown()
        client.close()
    finally:
        server.stop("term")
        if not args.keep_db:
            shutil.rmtree(os.path.join(work, "db"), ignore_errors=True)

    choice_values = choice_value_set(lists)
    table = summarize(items, evaluator.policies, choice_values)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([sys.executable] + sys.argv),
            "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(),
                        "platform": platform.platform()},
            "git_head": git_head(), "server_sha256": server_sha,
            "model": os.path.relpath(args.model, ROOT), "seed": args.seed,
            "source": args.source,
            "buckets": {b: BUCKETS[b] for b in buckets}, "sizing": sizing,
            "per_cell_dialogues": len(items) // max(1, len(buckets)),
            "restart": {"how": args.restart, **restart},
            "seconds": {"total": time.time() - started, "phase_a": time_a,
                        "phase_b": time_b},
            "sinks": SINKS, "window": WINDOW, "max_tokens": MAX_TOKENS,
            "server_log": os.path.join(work, "server.log")}
    print(markdown(table, ratios))
    if items:
        print(pooled_report(items, evaluator.policies, choice_values))
    print(json.dumps(meta, indent=1))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "summary": table}, f, indent=1)
        # Every question's reply, per policy, before and after the restart (gzipped JSON).
        items_path = re.sub(r"\.json$", "", args.out) + ".items.json.gz"
        slim = [{k: v for k, v in it.items() if k != "context"} for it in items]
        with gzip.open(items_path, "wt") as f:
            json.dump(slim, f, separators=(",", ":"))
        log(f"wrote {args.out} and {items_path}")


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_head():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


if __name__ == "__main__":
    main()
