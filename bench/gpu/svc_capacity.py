"""Capacity through the real server: how many sessions of --context raw tokens one
gistmem-server holds in a KV pool of --pool_gib under each policy, and their aggregate decode
rate with all of them generating at once.

Per policy, a fresh server and store (every stored byte is on this machine's disk):
  1. source: one session reads --context tokens for real (user messages of --append_chunk
     tokens through Append: prefill and commits as any client's).
  2. fill, --fill fork (the shortcut, documented in bench/RESULTS-gpu.md): ForkSession copies
     the source in the store, then one real short turn (Append of --clone_tokens tokens) loads
     the copy into the pool (a store restore: its own pages, no sharing) and prefills it.
     --fill prefill: every session reads the whole context like the source (slow at 32K).
     Until the pool refuses one (RESOURCE_EXHAUSTED: capped_by kv_pool), --max_sessions, the
     policy's time, or the store's disk (capped_by store_disk) says stop.
  3. decode: every held session generates at once (Generate, empty message: the reply header
     and --decode_tokens sampled tokens); one untimed round of 2 tokens first. Aggregate rate:
     tokens over the wall time, and "steady": the tokens that arrived while every session was
     decoding (from the last first token to the first last token) over that window. A round
     the pool cannot take (RESOURCE_EXHAUSTED) is run again with the newest clone deleted.
"""

import collections
import random
import threading
import time

from svc_common import (GistmemClient, GistmemError, RESOURCE_EXHAUSTED, Server, Stubs,
                        fill_context, free_bytes, fresh_dir, metrics, percentiles, policy_of,
                        text_of, timed_generate)

GIB = 1 << 30


def add_arguments(p):
    p.add_argument("--policies", default="gist,full,pool,window")
    p.add_argument("--weights", default="full=2,gist=1.5",
                   help="shares of the time by policy (others 1): full's 32K prefill and 8 GiB "
                        "store copies are the slowest")
    p.add_argument("--context", type=int, default=32768, help="raw tokens of each session")
    p.add_argument("--pool_gib", type=float, default=16.5, help="the server's --kv_pool_bytes")
    p.add_argument("--fill", choices=["fork", "prefill"], default="fork")
    p.add_argument("--append_chunk", type=int, default=8192, help="tokens per Append")
    p.add_argument("--clone_tokens", type=int, default=64, help="the real turn of each clone")
    p.add_argument("--max_sessions", type=int, default=256)
    p.add_argument("--inflight", type=int, default=4, help="clones made at once, at most")
    p.add_argument("--inflight_store_gib", type=float, default=8,
                   help="fewer at once when their stored copies pass this (a full 32K session on "
                        "8B is 8 GiB in the store, and as much again in the server's memory)")
    p.add_argument("--decode_tokens", type=int, default=32)
    p.add_argument("--decode_reserve_s", type=float, default=45,
                   help="time kept for decoding and stopping the server")
    p.add_argument("--arith_pool_gib", type=float, default=100,
                   help="also state how many sessions this pool would hold, by arithmetic")
    p.add_argument("--ratio", type=int, default=8)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--sinks", type=int, default=4)


def run(args, out, deadline):
    names = [n for n in args.policies.split(",") if n]
    weight = {n: 1.0 for n in names}
    weight.update({k: float(v) for k, v in (w.split("=") for w in args.weights.split(",") if w)})
    for i, name in enumerate(names):
        left = deadline - time.monotonic()
        if left < args.decode_reserve_s + 30:
            out.emit({"part": "svc-capacity", "policy": name, "skipped": f"budget ({left:.0f} s left)"})
            continue
        # Its share of what is left: a policy that ends early leaves its time to the next ones.
        policy_deadline = time.monotonic() + left * weight[name] / sum(weight[n] for n in names[i:])
        try:
            one_policy(args, out, name, policy_deadline)
        except Exception:  # one_policy emitted its record: the other policies go on
            pass


def one_policy(args, out, name, policy_deadline):
    policy = policy_of(name, args.ratio, args.window, args.sinks)
    pool = int(args.pool_gib * GIB)
    db = fresh_dir(f"{args.work}/cap-{name}")
    record = {"part": "svc-capacity", "policy": name, "ratio": policy.ratio,
              "window": policy.window, "sinks": policy.sink_tokens, "context": args.context,
              "kv_pool_bytes": pool, "fill": args.fill, "db_free_bytes_before": free_bytes(db)}
    flags = ["--kv_pool_bytes", str(pool), "--max_cache_bytes", str(pool), "--host_cache_bytes", "0",
             "--max_sessions_in_memory", str(args.max_sessions + 64),
             "--max_request_tokens", str(args.append_chunk), *args.server_flags]
    try:
        server = Server(args.server, args.model, args.device, db, flags, args.server_log,
                        f"capacity {name}", start_timeout=args.start_timeout)
    except Exception as error:
        record["error"] = f"server did not start: {error}"[:3000]
        out.emit(record)
        return
    record["server_start_s"] = round(server.start_s, 1)
    try:
        with GistmemClient(server.address, timeout=600, turn_retries=0) as client:
            fill_sessions(args, client, server, policy, record, policy_deadline)
            held = record.pop("held")
            try:
                record.update(metrics(server.metrics_port))
            except OSError as error:
                record["metrics_error"] = str(error)
            if held:
                record["decode"] = decode(args, client, server.address, held, record)
    except BaseException as error:  # cut off (SIGTERM) or failed: keep what was measured
        record.pop("held", None)
        record["error"] = f"{type(error).__name__}: {error}"[:3000]
        out.emit(record)
        raise
    finally:
        record["server_exit"], record["server_stop_s"] = server.stop()
        fresh_dir(db)  # the next policy's store needs the disk
    per = record.get("bytes_per_session") or 0
    if per:
        record["sessions_by_arithmetic"] = pool // per
        record["arith_pool_bytes"] = int(args.arith_pool_gib * GIB)
        record["sessions_by_arithmetic_at_arith_pool"] = int(args.arith_pool_gib * GIB) // per
    out.emit(record)


def fill_sessions(args, client, server, policy, record, policy_deadline):
    rng = random.Random(1)
    start = time.monotonic()
    source = client.create_session("", policy=policy).session_id
    read = fill_context(client, source, args.context, args.append_chunk, rng)
    record["source_fill_s"] = round(time.monotonic() - start, 2)
    stats = client.stats(source)
    record.update(context_raw_tokens=stats.raw_tokens, stream_tokens=stats.stream_tokens,
                  retained_entries=stats.retained_entries, source_read_tokens=read,
                  bytes_per_session=stats.bytes_gpu + stats.bytes_host,
                  bytes_disk_per_session=stats.bytes_disk)
    held, lock = [source], threading.Lock()
    fill_until = policy_deadline - args.decode_reserve_s
    state = {"inflight": 0, "stop": None, "detail": "", "errors": collections.Counter(),
             "clone_s": []}
    # Room for a copy in the store (a fork writes one whole) and RocksDB's own slack.
    need_disk = int(stats.bytes_disk * 1.3) + 2 * GIB

    def stop(why, detail=""):
        with lock:
            if state["stop"] is None:
                state["stop"], state["detail"] = why, detail[:500]

    def make_one(worker_client, worker_rng):
        if args.fill == "fork":
            sid = worker_client.fork_session(source).session_id
            try:
                worker_client.append(sid, text_of(args.clone_tokens, worker_rng), role="user")
            except GistmemError:
                worker_client.delete_session(sid)
                raise
            return sid
        sid = worker_client.create_session("", policy=policy).session_id
        try:
            fill_context(worker_client, sid, args.context, args.append_chunk, worker_rng)
        except GistmemError:
            worker_client.delete_session(sid)
            raise
        return sid

    def worker(index):
        worker_rng = random.Random(100 + index)
        with GistmemClient(server.address, timeout=600, turn_retries=0) as worker_client:
            while True:
                with lock:
                    if state["stop"] or len(held) + state["inflight"] >= args.max_sessions:
                        if not state["stop"] and len(held) >= args.max_sessions:
                            state["stop"] = "max_sessions"
                        return
                    if time.monotonic() > fill_until:
                        state["stop"] = "time"
                        return
                    if free_bytes(args.work) < need_disk * (state["inflight"] + 1):
                        state["stop"] = "store_disk"
                        state["detail"] = f"{free_bytes(args.work)} bytes free"
                        return
                    state["inflight"] += 1
                began = time.monotonic()
                try:
                    sid = make_one(worker_client, worker_rng)
                except GistmemError as error:
                    with lock:
                        state["inflight"] -= 1
                        state["errors"][error.code.name] += 1
                    if error.code == RESOURCE_EXHAUSTED:
                        stop("kv_pool", error.details)
                    elif sum(state["errors"].values()) >= 3:
                        stop("errors", f"{error.code.name}: {error.details}")
                    continue
                with lock:
                    state["inflight"] -= 1
                    held.append(sid)
                    state["clone_s"].append(time.monotonic() - began)

    workers = max(1, min(args.inflight, int(args.inflight_store_gib * GIB // max(1, stats.bytes_disk))))
    record["fill_workers"] = workers
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    fill_start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record.update(sessions_held=len(held), capped_by=state["stop"] or "none",
                  capped_detail=state["detail"], fill_errors=dict(state["errors"]),
                  fill_s=round(time.monotonic() - fill_start, 2),
                  clone_s=percentiles(state["clone_s"]), db_free_bytes_after_fill=free_bytes(args.work))
    if len(held) > 1:
        clone = client.stats(held[-1])
        record["bytes_per_clone"] = clone.bytes_gpu + clone.bytes_host
    record["held"] = held


def decode(args, client, address, held, record):
    """All held sessions generate at once; rounds the pool refuses run again with one fewer."""
    deleted, last = 0, None
    for attempt in range(4):
        last = decode_round(address, held, 2, seed=attempt)  # untimed: warms up, tries the room
        if not last["errors"].get("RESOURCE_EXHAUSTED"):
            last = decode_round(address, held, args.decode_tokens, seed=10 + attempt)
            if not last["errors"].get("RESOURCE_EXHAUSTED"):
                last.update(sessions=len(held), deleted_for_room=deleted)
                return last
        if len(held) <= 1:
            break
        client.delete_session(held.pop())  # the newest clone, never the source
        deleted += 1
    return {"sessions": len(held), "deleted_for_room": deleted,
            "error": "the pool refused every round (RESOURCE_EXHAUSTED)", "last": last}


def decode_round(address, sessions, max_tokens, seed):
    stubs = Stubs(address)
    barrier = threading.Barrier(len(sessions))
    results, errors = [None] * len(sessions), collections.Counter()
    examples = {}

    stub_of = [stubs.stub(i) for i in range(len(sessions))]

    def one(i):
        stub = stub_of[i]
        barrier.wait()
        try:
            results[i] = timed_generate(stub, sessions[i], "", 600, max_tokens=max_tokens,
                                        temperature=1.0, seed=seed * 100003 + i)
        except GistmemError as error:
            errors[error.code.name] += 1
            examples.setdefault(error.code.name, error.details[:300])

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stubs.close()
    done = [r for r in results if r and r["first"] is not None]
    out = {"max_tokens": max_tokens, "turns_ok": len(done), "errors": dict(errors),
           "error_examples": examples}
    if not done:
        return out
    tokens = sum(r["tokens"] for r in done)
    wall = max(r["done"] for r in done) - min(r["sent"] for r in done)
    t_a = max(r["first"] for r in done)
    t_b = min(r["arrivals"][-1][0] for r in done)
    steady = sum(n for r in done for t, n in r["arrivals"] if t_a < t <= t_b)
    gaps = [(b[0] - a[0]) / b[1] for r in done for a, b in zip(r["arrivals"], r["arrivals"][1:])]
    out.update(tokens=tokens, wall_s=round(wall, 3), tok_per_s=tokens / wall if wall > 0 else None,
               steady_window_s=round(t_b - t_a, 3) if t_b > t_a else 0,
               steady_tokens=steady,
               steady_tok_per_s=steady / (t_b - t_a) if t_b > t_a else None,
               ttft_ms=percentiles([r["first"] - r["sent"] for r in done], 1e3),
               itl_ms=percentiles(gaps, 1e3),
               finish=dict(collections.Counter(r["finish"] for r in done)))
    return out
