"""Pieces the service rows share (bench/gpu/service_bench.py): gistmem-server as a child
process, the Python client, texts of an exact length, turns timed token by token, JSON lines.

The checkpoints' tokenizer (bench/peers/peers.py, write_serving_files) has one token per byte
and no merges, so a text of n ASCII letters is n tokens, and a user message adds 9 more (its
Llama-3 header and <|eot_id|>; the first turn of a session also BOS).
"""

import collections
import json
import os
import pathlib
import queue
import re
import shutil
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "clients" / "python"))
sys.path.insert(0, str(ROOT / "bench" / "peers"))

import grpc  # noqa: E402
from gistmem_client import GistmemClient, GistmemError, Policy  # noqa: E402
from gistmem_client._stubs import pb, pb_grpc  # noqa: E402
from gistmem_client.types import sampling_params  # noqa: E402

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
__all__ = ["SETTINGS", "GistmemClient", "GistmemError", "RESOURCE_EXHAUSTED", "Output", "Server", "policy_of",
           "text_of", "fill_context", "timed_generate", "Stubs", "percentiles", "metrics",
           "free_bytes", "fresh_dir", "ensure_serving_files"]


def policy_of(name, ratio, window, sinks):
    """The issue's policies: full; gist and pool with r, W, S; window with W, S."""
    if name == "full":
        return Policy("full")
    if name == "window":
        return Policy("window", 0, window, sinks)
    if name in ("gist", "pool"):
        return Policy(name, ratio, window, sinks)
    raise ValueError(f"unknown policy {name!r} (full, gist, pool, window)")


def ensure_serving_files(model_dir):
    """tokenizer.json and friends beside a checkpoint peers.py wrote before it made them."""
    if not (pathlib.Path(model_dir) / "tokenizer.json").exists():
        import peers
        with open(pathlib.Path(model_dir) / "config.json") as f:
            peers.write_serving_files(str(model_dir), json.load(f))


class Output:
    """JSON lines appended to `path`; each also printed, cut short, for the call's log."""

    def __init__(self, path, base=None):
        self.path = path
        self.base = dict(base or {})

    def emit(self, record):
        record = {**self.base, **record}
        line = json.dumps(record)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        print(line[:400], flush=True)
        return record


# Set by service_bench.py: where every server's pid is written (bench/gpu/run.sh ends those still
# running after a part that was cut off), and the library path of the bundle's server (its
# libraries only: the Python clients keep their own).
SETTINGS = {"pidfile": None, "server_lib": ""}


class Server:
    """gistmem-server with --listen 127.0.0.1:0; stdout and stderr go to `log` (appended)."""

    def __init__(self, binary, model, device, db, flags, log, name, start_timeout=600):
        # The engine's fast paths, as gistmem-gpu-bench measures them (SVC_CUDA_FAST_PATHS=false:
        # the reference paths); a CPU server ignores the flag.
        fast = os.environ.get("SVC_CUDA_FAST_PATHS", "true")
        self.command = [binary, "--device", device, "--model", str(model), "--db", str(db),
                        "--listen", "127.0.0.1:0", "--metrics_listen", "127.0.0.1:0",
                        f"--cuda_fast_paths={fast}", *flags]
        self.log = open(log, "a")
        self.log.write(f"\n##### {name}: {' '.join(self.command)}\n")
        self.log.flush()
        self.name = name
        self.lines = collections.deque(maxlen=60)
        started = time.monotonic()
        env = dict(os.environ)
        if SETTINGS["server_lib"]:
            env["LD_LIBRARY_PATH"] = SETTINGS["server_lib"]
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        if SETTINGS["pidfile"]:
            with open(SETTINGS["pidfile"], "a") as f:
                f.write(f"{self.process.pid}\n")
        found = queue.Queue()
        self.address = self.metrics_port = None

        def read():
            for line in self.process.stdout:
                self.log.write(line)
                self.lines.append(line)
                if m := re.match(r"metrics on (\d+)", line):
                    self.metrics_port = int(m.group(1))
                if m := re.match(r"listening on (\S+:\d+)", line):
                    found.put(m.group(1))
            self.log.flush()
            found.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            self.address = found.get(timeout=start_timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"{name}: not listening after {start_timeout} s:\n{self.tail()}")
        if self.address is None:
            raise RuntimeError(f"{name}: server exited ({self.process.wait()}) before listening:\n"
                               + self.tail())
        self.start_s = time.monotonic() - started

    def tail(self):
        return "".join(self.lines)

    def stop(self, timeout=120):
        """SIGTERM (running turns get --shutdown_grace), then SIGKILL; (exit code, seconds)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.flush()
        return self.process.returncode, round(time.monotonic() - started, 2)


def text_of(n, rng):
    """n bytes of lower-case words: n tokens; no space at either end (the template trims)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    chars = [rng.choice(letters) if i % 7 else " " for i in range(n)]
    if n:
        chars[0] = chars[-1] = "x"
    return "".join(chars)


def fill_context(client, session_id, raw_tokens, chunk, rng):
    """Appends user messages of at most `chunk` tokens until the session has read `raw_tokens`
    text tokens (exactly, once a message's overhead is known). Returns the tokens read."""
    read, overhead, first = 0, 10, True
    while raw_tokens - read > overhead:
        n = min(chunk, raw_tokens - read) - overhead
        usage = client.append(session_id, text_of(n, rng), role="user")
        read += usage.prompt_tokens
        overhead = usage.prompt_tokens - n - first  # BOS comes with the first turn only
        first = False
    return read


class Stubs:
    """Channels for many concurrent streams: one per `per_channel` of them."""

    def __init__(self, address, per_channel=32):
        self.address, self.per_channel = address, per_channel
        self.channels, self.stubs = [], []

    def stub(self, index):
        while len(self.stubs) <= index // self.per_channel:
            channel = grpc.insecure_channel(self.address)
            self.channels.append(channel)
            self.stubs.append(pb_grpc.GistmemStub(channel))
        return self.stubs[index // self.per_channel]

    def close(self):
        for channel in self.channels:
            channel.close()


def timed_generate(stub, session_id, message, timeout, **sampling):
    """One Generate call read event by event. Returns a dict: sent, first (the first delta with
    token ids; None when there was none), first_or_end, arrivals [(time, tokens)], tokens, done
    (perf_counter seconds), usage, finish. Raises GistmemError."""
    request = pb.GenerateRequest(session_id=session_id,
                                 message=pb.Message(role="user", content=message),
                                 sampling=sampling_params(**sampling))
    sent = time.perf_counter()
    first, arrivals, end = None, [], None
    try:
        for event in stub.Generate(request, timeout=timeout,
                                   metadata=(("x-gistmem-session", session_id),)):
            kind = event.WhichOneof("event")
            if kind == "delta" and event.delta.token_ids:
                now = time.perf_counter()
                first = first or now
                arrivals.append((now, len(event.delta.token_ids)))
            elif kind == "end":
                end, ended = event.end, time.perf_counter()
    except grpc.RpcError as error:
        raise GistmemError.from_rpc_error(error) from error
    if end is None:
        raise GistmemError(grpc.StatusCode.UNKNOWN, "stream ended before TurnEnd")
    # A reply whose first sampled token is a stop token has no delta: its end is its first token.
    return {"sent": sent, "first": first, "first_or_end": first or ended, "arrivals": arrivals,
            "tokens": sum(n for _, n in arrivals), "done": time.perf_counter(),
            "usage": end.usage, "finish": pb.FinishReason.Name(end.finish_reason)}


def percentiles(values, scale=1.0):
    """p50, p90, p99, max, mean, count of `values` (times `scale`); None when empty."""
    if not values:
        return None
    v = sorted(values)
    at = lambda q: v[min(len(v) - 1, max(0, int(round(q / 100 * (len(v) - 1)))))] * scale
    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": v[-1] * scale,
            "mean": sum(v) / len(v) * scale, "count": len(v)}


def metrics(port):
    """The server's gistmem_sessions and gistmem_cache_bytes by tier (Prometheus text)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = collections.defaultdict(float)
    for line in text.splitlines():
        if m := re.match(r'gistmem_(sessions|cache_bytes)\{([^}]*)\} (\S+)$', line):
            tier = re.search(r'tier="(\w+)"', m.group(2))
            out[f"{m.group(1)}_{tier.group(1) if tier else 'all'}"] += float(m.group(3))
    return dict(out)


def free_bytes(path):
    return shutil.disk_usage(path).free


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    return path
