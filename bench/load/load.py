#!/usr/bin/env python3
"""Load generator for gistmem-server: many concurrent streaming sessions on 127.0.0.1.

Starts build/service/gistmem-server (models/gistmem-16k, a fresh RocksDB in a temp folder,
--listen 127.0.0.1:0) with the cache limits given, then keeps --concurrency streaming turns in
flight for --duration seconds over a pool of --sessions sessions (more sessions than the server
may keep in memory, so idle ones leave memory and come back from the store). Each worker
thread takes the least recently used free session, sends it one user message on a Generate
stream (every 4th turn on a Chat stream instead) and reads the reply as it streams; a session
near its context limit is deleted and replaced by a new one. Bounded in count and time: at most
--max-turns turns, no turn started after --duration, and every call has a deadline. With
--address HOST:PORT it loads a server already running instead (e.g. the GPU server of
bench/gpu/svc_streams.py, which runs several generators at once and merges their
--raw-samples).

Reports (stdout, and --json FILE): completed turns, generated tokens and throughput; time to
first token and inter-token latency (p50, p90, p99, max); errors by status code; the server's
resident memory (VmRSS from /proc) sampled every --rss-interval seconds, its maximum and how it
moved over the second half of the run, next to the cache budget (--max-cache-bytes); and its
anonymous part (RssAnon), on which --rss-overhead-mib's bound is checked.

    /usr/bin/python3 bench/load/load.py --duration 150 --concurrency 12 --sessions 48
"""

import argparse
import collections
import json
import os
import pathlib
import platform
import queue
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))


def use_client():
    if not (ROOT / "clients" / "python" / "gistmem_client" / "_generated").is_dir():
        subprocess.run([str(ROOT / "clients" / "python" / "generate_stubs.sh")], check=True)
    import grpc  # noqa: F401
    import gistmem_client  # noqa: F401


use_client()
import grpc  # noqa: E402
from gistmem_client import GistmemClient, GistmemError, Policy  # noqa: E402

POLICIES = {
    "full": Policy("full"),
    "window": Policy("window"),
    "pool": Policy("pool"),
    "gist": Policy("gist"),
}
TOPICS = ("the harbor lights", "a recipe for bread", "the weather in spring", "a train timetable",
          "an old lighthouse", "the rules of chess", "a garden in June", "a mountain road",
          "a library card", "the night sky", "a broken bicycle", "a letter from a friend")
FILLER = ("Please keep it short, but tell me what you think and why, and mention one detail I "
          "might have missed. ")


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


def rss_bytes(pid, field="VmRSS"):
    """A resident-memory figure of /proc/PID/status in bytes: VmRSS (all resident pages) or
    RssAnon (the anonymous ones: what the server allocated, without the pages of the files it
    maps, such as a 60 MiB share of libcublasLt that a CUDA build maps even with no GPU)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return None
    return None


def weights_fp32_bytes(model_dir):
    """The model's parameters as fp32 (how the CPU engine holds them), from the safetensors
    headers: the first term of the server's fixed memory overhead (service/README.md)."""
    total = 0
    for path in sorted(pathlib.Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += 4 * count
    return total


class Server:
    """gistmem-server as a subprocess; its output is kept (last lines) for error messages."""

    def __init__(self, binary, model, db, args, env=None):
        command = [binary, "--model", model, "--db", db, "--listen", "127.0.0.1:0", *args]
        self.command = command
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env=env)
        self.lines = collections.deque(maxlen=400)
        self.address = None
        found = queue.Queue()

        def read():
            for line in self.process.stdout:
                self.lines.append(line)
                match = re.search(r"^listening on (\S+:\d+)", line)
                if match and self.address is None:
                    found.put(match.group(1))
            found.put(None)

        threading.Thread(target=read, daemon=True).start()
        self.address = found.get(timeout=300)
        if self.address is None:
            raise RuntimeError("server exited before listening:\n" + "".join(self.lines))

    def stop(self, timeout=120):
        self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_tail(self, n=40):
        return "".join(list(self.lines)[-n:])


class Load:
    def __init__(self, args, address):
        self.args = args
        self.address = address
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.free = collections.deque()  # idle session ids, least recently used first
        self.session_tokens = {}  # session id -> stream tokens after its last turn
        self.session_policy = {}
        self.created = 0
        self.deleted = 0
        self.turns = 0
        self.started_turns = 0
        self.tokens = 0
        self.ttft = []  # seconds, per turn
        self.itl = []  # seconds, per generated token after the first
        self.turn_seconds = []
        self.errors = collections.Counter()
        self.error_examples = {}
        self.chat_turns = 0
        self.deadline = 0.0

    def new_session(self, client):
        with self.lock:
            index = self.created
            self.created += 1
        policy = self.args.policy
        if policy == "mix":
            policy = list(POLICIES)[index % len(POLICIES)]
        session = client.create_session("You are a helpful assistant. Answer briefly.",
                                        policy=POLICIES[policy])
        with self.lock:
            self.session_tokens[session.session_id] = 0
            self.session_policy[session.session_id] = policy
        return session.session_id

    def take_session(self, client):
        with self.lock:
            if self.free:
                return self.free.popleft()
        return None

    def message(self):
        topic = self.rng.choice(TOPICS)
        return f"Tell me something about {topic}. " + FILLER * self.rng.randint(0, 2)

    def record_error(self, error, where):
        code = error.code.name if isinstance(error, GistmemError) else type(error).__name__
        with self.lock:
            self.errors[code] += 1
            self.error_examples.setdefault(code, f"{where}: {error}")

    def one_turn(self, client, session_id, use_chat):
        """Streams one turn; returns (ttft, gaps, tokens, stream_tokens)."""
        sampling = dict(max_tokens=self.args.max_tokens, temperature=0.7, top_p=0.95,
                        seed=self.rng.randrange(1 << 30))
        sent = time.perf_counter()
        first = None
        last = None
        gaps = []
        tokens = 0
        if use_chat:
            chat = client.chat(session_id, timeout=self.args.turn_timeout)
            reply = chat.send(self.message(), **sampling)
        else:
            reply = client.generate(session_id, self.message(), **sampling)
        seen = 0
        for _ in reply:  # text deltas; token ids accumulate in reply.token_ids
            now = time.perf_counter()
            count = len(reply.token_ids) - seen
            seen = len(reply.token_ids)
            if count <= 0:
                continue
            if first is None:
                first = now
                gaps.extend([0.0] * (count - 1))
            else:
                gaps.extend([(now - last) / count] * count)
            last = now
            tokens += count
        if use_chat:
            chat.close()
        # Tokens that arrived without text (an unfinished UTF-8 character at the very end).
        tokens += len(reply.token_ids) - seen
        ttft = (first - sent) if first is not None else None
        return ttft, gaps, tokens, reply.end.usage.stream_tokens, time.perf_counter() - sent

    def worker(self, worker_index):
        with GistmemClient(self.address, timeout=self.args.turn_timeout) as client:
            while time.monotonic() < self.deadline:
                with self.lock:
                    if self.started_turns >= self.args.max_turns:
                        return
                    self.started_turns += 1
                    turn_number = self.started_turns
                session_id = self.take_session(client)
                if session_id is None:
                    try:
                        session_id = self.new_session(client)
                    except GistmemError as error:
                        self.record_error(error, "CreateSession")
                        time.sleep(0.5)
                        continue
                use_chat = turn_number % 4 == 0
                try:
                    ttft, gaps, tokens, stream, seconds = self.one_turn(client, session_id,
                                                                        use_chat)
                except GistmemError as error:
                    self.record_error(error, f"turn on {session_id}")
                    full = "stream tokens" in error.details  # at its context limit
                    stream = None if full else self.session_tokens.get(session_id, 0)
                    if not full:
                        time.sleep(0.2)  # e.g. every place in memory busy: back off
                else:
                    with self.lock:
                        self.turns += 1
                        self.chat_turns += use_chat
                        self.tokens += tokens
                        if ttft is not None:
                            self.ttft.append(ttft)
                        self.itl.extend(gaps)
                        self.turn_seconds.append(seconds)
                        self.session_tokens[session_id] = stream
                if stream is not None and stream < self.args.retire_tokens:
                    with self.lock:
                        self.free.append(session_id)
                else:  # near its context limit (or broken): replace it
                    try:
                        client.delete_session(session_id)
                        with self.lock:
                            self.deleted += 1
                    except GistmemError as error:
                        self.record_error(error, "DeleteSession")

    def run(self):
        with GistmemClient(self.address, timeout=60) as client:
            for _ in range(self.args.sessions):
                self.free.append(self.new_session(client))
        self.deadline = time.monotonic() + self.args.duration
        threads = [threading.Thread(target=self.worker, args=(i,), daemon=True)
                   for i in range(self.args.concurrency)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=self.args.duration + 4 * self.args.turn_timeout)
        return time.monotonic() - started


def summarize(values, scale=1000.0):
    if not values:
        return None
    return {"p50": percentile(values, 50) * scale, "p90": percentile(values, 90) * scale,
            "p99": percentile(values, 99) * scale, "max": max(values) * scale,
            "mean": sum(values) / len(values) * scale, "count": len(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=str(ROOT / "build" / "service" / "gistmem-server"))
    parser.add_argument("--model", default=str(ROOT / "models" / "gistmem-16k"))
    parser.add_argument("--duration", type=float, default=150, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=12, help="turns in flight")
    parser.add_argument("--sessions", type=int, default=48, help="sessions in the pool")
    parser.add_argument("--max-turns", type=int, default=100000)
    parser.add_argument("--max-tokens", type=int, default=48, help="per reply")
    parser.add_argument("--policy", default="mix", choices=["mix", *POLICIES])
    parser.add_argument("--retire-tokens", type=int, default=1700,
                        help="replace a session once its stream is this long (context 2048)")
    parser.add_argument("--max-cache-bytes", type=int, default=64 << 20)
    parser.add_argument("--max-sessions-in-memory", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="server --threads (0: all)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="more gistmem-server flags (repeat)")
    parser.add_argument("--turn-timeout", type=float, default=120, help="deadline of each call")
    parser.add_argument("--rss-interval", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the report here too")
    parser.add_argument("--label", default="", help="a name for this run in the report")
    parser.add_argument("--rss-overhead-mib", type=float, default=None,
                        help="fail unless the server's anonymous RSS stays <= --max-cache-bytes + the "
                             "model's weights as fp32 + this (service/README.md, Memory)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless turns completed with no error (the ctest smoke run)")
    parser.add_argument("--address", help="HOST:PORT of a running gistmem-server: load it instead "
                        "of starting one (its flags are its own; no RSS figures)")
    parser.add_argument("--raw-samples", action="store_true",
                        help="also put every TTFT and inter-token gap (seconds) in the --json "
                             "report (to merge several generators' percentiles)")
    args = parser.parse_args()
    if args.address:
        sys.exit(load_running_server(args))
    if args.concurrency > args.max_sessions_in_memory:
        # More turns in flight than sessions in memory: the rest are refused RESOURCE_EXHAUSTED.
        print("note: --concurrency exceeds --max-sessions-in-memory; expect RESOURCE_EXHAUSTED",
              file=sys.stderr)

    tmp = tempfile.mkdtemp(prefix="gistmem-load-")
    env = dict(os.environ)
    server = Server(args.server, args.model, os.path.join(tmp, "db"),
                    ["--max_cache_bytes", str(args.max_cache_bytes),
                     "--max_sessions_in_memory", str(args.max_sessions_in_memory),
                     "--threads", str(args.threads), *args.server_arg], env=env)
    pid = server.process.pid
    rss = []  # (seconds since start, bytes)
    anon = []  # (seconds since start, anonymous bytes)
    stop_sampling = threading.Event()
    t0 = time.monotonic()

    def sample():
        while not stop_sampling.is_set():
            value, value_anon = rss_bytes(pid), rss_bytes(pid, "RssAnon")
            if value is not None and value_anon is not None:
                rss.append((time.monotonic() - t0, value))
                anon.append((time.monotonic() - t0, value_anon))
            stop_sampling.wait(args.rss_interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rss_idle, anon_idle = rss_bytes(pid), rss_bytes(pid, "RssAnon")
    load = Load(args, server.address)
    try:
        elapsed = load.run()
    finally:
        stop_sampling.set()
        sampler.join()
        exit_code = server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    during = [value for t, value in rss]
    half = [value for t, value in rss if t >= elapsed / 2]
    report = {
        **run_report(args, load, elapsed),
        "server": server.command[1:],
        "rss_idle_mib": rss_idle / 2**20 if rss_idle else None,
        "rss_max_mib": max(during) / 2**20 if during else None,
        "rss_second_half_mib": ({"min": min(half) / 2**20, "max": max(half) / 2**20,
                                 "first": half[0] / 2**20, "last": half[-1] / 2**20}
                                if half else None),
        "rss_samples": [(round(t, 1), round(v / 2**20, 1)) for t, v in rss],
        "rss_anon_idle_mib": anon_idle / 2**20 if anon_idle else None,
        "rss_anon_max_mib": max(v for t, v in anon) / 2**20 if anon else None,
        "cache_budget_mib": args.max_cache_bytes / 2**20,
        "weights_fp32_mib": weights_fp32_bytes(args.model) / 2**20,
        "rss_bound_mib": (None if args.rss_overhead_mib is None else
                          (args.max_cache_bytes + weights_fp32_bytes(args.model)) / 2**20
                          + args.rss_overhead_mib),
        "server_exit": exit_code,
    }
    print_report(report)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if exit_code != 0:
        print("server log tail:\n" + server.log_tail(), file=sys.stderr)
    # The bound is on anonymous memory: mapped files' pages are the kernel's to drop and share.
    over_bound = (report["rss_bound_mib"] is not None
                  and report["rss_anon_max_mib"] > report["rss_bound_mib"])
    if over_bound:
        print(f"server anonymous RSS {report['rss_anon_max_mib']:.1f} MiB is over its bound "
              f"{report['rss_bound_mib']:.1f} MiB", file=sys.stderr)
    failed = exit_code != 0 or over_bound or (args.check and (load.errors or load.turns == 0))
    sys.exit(1 if failed else 0)


def run_report(args, load, elapsed):
    """What every report says of a run: when and where, the options, counts, rates, latencies
    and errors."""
    return {
        "label": args.label,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_name(), "python": platform.python_version()},
        "args": vars(args),
        "elapsed_s": elapsed,
        "sessions_created": load.created,
        "sessions_deleted": load.deleted,
        "turns": load.turns,
        "chat_turns": load.chat_turns,
        "tokens": load.tokens,
        "tokens_per_s": load.tokens / elapsed,
        "turns_per_s": load.turns / elapsed,
        "ttft_ms": summarize(load.ttft),
        "itl_ms": summarize(load.itl),
        "turn_ms": summarize(load.turn_seconds),
        "errors": dict(load.errors),
        "error_examples": load.error_examples,
    }


def load_running_server(args):
    """--address: the load against a server someone else started (bench/gpu/svc_streams.py runs
    several of these at once against the GPU server). Returns the exit code."""
    load = Load(args, args.address)
    elapsed = load.run()
    report = {
        **run_report(args, load, elapsed),
        "address": args.address,
    }
    if args.raw_samples:
        report["ttft_s"], report["itl_s"] = load.ttft, load.itl
    print_report(report)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 1 if args.check and (load.errors or load.turns == 0) else 0


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_report(r):
    def line(name, s):
        if s is None:
            return f"{name}: none"
        return (f"{name}: p50 {s['p50']:.1f} ms, p90 {s['p90']:.1f}, p99 {s['p99']:.1f}, "
                f"max {s['max']:.1f} (n={s['count']})")

    print(f"run {r['label'] or '(unnamed)'} on {r['machine']['nproc']} x {r['machine']['cpu']}, "
          f"{r['date']}")
    print(f"{r['elapsed_s']:.1f} s, {r['turns']} turns ({r['chat_turns']} on Chat streams), "
          f"{r['tokens']} tokens: {r['tokens_per_s']:.1f} tokens/s, {r['turns_per_s']:.2f} turns/s; "
          f"sessions created {r['sessions_created']}, deleted {r['sessions_deleted']}")
    print(line("time to first token", r["ttft_ms"]))
    print(line("inter-token latency", r["itl_ms"]))
    print(line("turn", r["turn_ms"]))
    print(f"errors: {r['errors'] or 'none'}")
    for code, example in r["error_examples"].items():
        print(f"  e.g. {code}: {example[:300]}")
    if r.get("rss_idle_mib") is None:  # --address: another's server, its RSS not ours to read
        return
    half = r["rss_second_half_mib"]
    print(f"server RSS: idle {r['rss_idle_mib']:.1f} MiB, max {r['rss_max_mib']:.1f} MiB; "
          f"second half {half['first']:.1f} -> {half['last']:.1f} MiB (min {half['min']:.1f}, "
          f"max {half['max']:.1f}); cache budget {r['cache_budget_mib']:.0f} MiB; weights (fp32) "
          f"{r['weights_fp32_mib']:.1f} MiB; bound "
          f"{'none' if r['rss_bound_mib'] is None else format(r['rss_bound_mib'], '.1f')} MiB "
          f"(on anonymous RSS: idle {r['rss_anon_idle_mib']:.1f}, max {r['rss_anon_max_mib']:.1f}); "
          f"server exit {r['server_exit']}")


if __name__ == "__main__":
    main()
