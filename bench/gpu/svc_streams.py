"""Streams: the load generator (bench/load/load.py) against one gistmem-server, at each of
--levels concurrent streams: time to first token and inter-token latency, p50 and p99.

One server, fresh store, new sessions under --policy (the model's r, W, S). Each level runs
ceil(level / --per_process) load.py processes at once (--address: they load this server; a
Python process drives at most --per_process streams, so the client's GIL is not what is
measured), each keeping its share of the streams in flight for --duration seconds (3 turns in
4 Generate, 1 in 4 a Chat stream; replies of --max_tokens tokens, sampled), and their raw
samples are merged. A short untimed level of 4 streams runs first.
"""

import json
import math
import os
import subprocess
import sys
import time

from svc_common import ROOT, Server, fresh_dir, percentiles

LOAD = ROOT / "bench" / "load" / "load.py"


def add_arguments(p):
    p.add_argument("--levels", default="1,8,64,256")
    p.add_argument("--duration", type=float, default=20, help="seconds of load per level")
    p.add_argument("--policy", default="gist")
    p.add_argument("--max_tokens", type=int, default=48)
    p.add_argument("--per_process", type=int, default=64)
    p.add_argument("--pool_gib", type=float, default=40)
    p.add_argument("--turn_timeout", type=float, default=120)


def run(args, out, deadline):
    db = fresh_dir(f"{args.work}/streams")
    pool = int(args.pool_gib * (1 << 30))
    flags = ["--kv_pool_bytes", str(pool), "--max_cache_bytes", str(pool),
             "--max_sessions_in_memory", "4096", *args.server_flags]
    server = Server(args.server, args.model, args.device, db, flags, args.server_log, "streams",
                    start_timeout=args.start_timeout)
    base = {"part": "svc-streams", "policy": args.policy, "max_tokens": args.max_tokens,
            "duration_s": args.duration, "kv_pool_bytes": pool, "server_start_s": round(server.start_s, 1)}
    try:
        level(args, server.address, 4, min(5.0, args.duration))  # untimed warm-up
        for n in [int(x) for x in args.levels.split(",") if x]:
            if deadline - time.monotonic() < args.duration + 30:
                out.emit({**base, "concurrency": n, "skipped": "budget"})
                continue
            out.emit({**base, **level(args, server.address, n, args.duration)})
    except Exception as error:
        out.emit({**base, "error": f"{type(error).__name__}: {error}"[:3000]})
    finally:
        server.stop()
        fresh_dir(db)


def level(args, address, streams, duration):
    processes = math.ceil(streams / args.per_process)
    shares = [streams // processes + (i < streams % processes) for i in range(processes)]
    runs = []
    for i, share in enumerate(shares):
        report = f"{args.work}/streams-{streams}-{i}.json"
        command = [sys.executable, str(LOAD), "--address", address, "--concurrency", str(share),
                   "--sessions", str(share), "--duration", str(duration), "--max-tokens",
                   str(args.max_tokens), "--policy", args.policy, "--turn-timeout",
                   str(args.turn_timeout), "--seed", str(1 + i), "--json", report, "--raw-samples",
                   "--label", f"{streams} streams, part {i}"]
        log = open(f"{args.work}/streams-{streams}-{i}.log", "w")
        runs.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}), report, log))
    reports, failures = [], []
    for process, report, log in runs:
        try:
            rc = process.wait(timeout=duration + 4 * args.turn_timeout + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            rc = "timeout"
        log.close()
        if os.path.exists(report):
            with open(report) as f:
                reports.append(json.load(f))
        else:
            with open(log.name) as f:
                failures.append(f"rc {rc}: {f.read()[-1500:]}")
    ttft = [x for r in reports for x in r["ttft_s"]]
    itl = [x for r in reports for x in r["itl_s"]]
    errors = {}
    for r in reports:
        for code, count in r["errors"].items():
            errors[code] = errors.get(code, 0) + count
    elapsed = max((r["elapsed_s"] for r in reports), default=0)
    tokens = sum(r["tokens"] for r in reports)
    return {"concurrency": streams, "processes": processes, "turns": sum(r["turns"] for r in reports),
            "tokens": tokens, "elapsed_s": round(elapsed, 2),
            "tokens_per_s": tokens / elapsed if elapsed else None,
            "ttft_ms": percentiles(ttft, 1e3), "itl_ms": percentiles(itl, 1e3), "errors": errors,
            "error_examples": {k: v for r in reports for k, v in r["error_examples"].items()},
            "generator_failures": failures}
