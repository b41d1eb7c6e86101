"""Resume: time to first token (TTFT) of a --context-token session brought back (a) from the
store after a server restart and (b) from the host tier, each against (c) re-reading its
transcript from scratch, all through gistmem-server and measured at the client.

Server 1, fresh store:
  warm-up   a throwaway session reads 1K tokens and replies (kernels, cuBLASLt plans: no
            cold start in any timing); then it is deleted
  scratch   a new session reads the whole context as ONE message (Generate, max_tokens 2):
            TTFT = re-reading the transcript (--scratch_samples of them, the first is S0)
  resident  one more short turn on S0 (its cache in the pool)
  S1.. S{n} forks of S0: store copies, each a --context-token session as stored
Server 2 on the same store (restart_s: SIGTERM of server 1 to server 2 listening), with
--max_cache_bytes 1.5 sessions and --host_cache_bytes 4 sessions, so that a second session in
the pool parks the first in the host tier:
  warm-up, then turns of --message_tokens tokens (max_tokens 2), in this order:
  store S0, store S1 (S0 parks), host S0 (S1 parks), host S1, store S2, resident S2.
  "parked" records each host turn's session bytes before it (GPU server: gpu 0, host > 0).
Store reads come from the OS page cache (the files were just written); a cold read would add
the disk's time.
"""

import random
import statistics
import time

from svc_common import (GistmemClient, Server, Stubs, fill_context, fresh_dir, policy_of, text_of,
                        timed_generate)


def add_arguments(p):
    p.add_argument("--policies", default="gist", help="full needs one 8 GiB store value: no")
    p.add_argument("--context", type=int, default=32768)
    p.add_argument("--pool_gib", type=float, default=16)
    p.add_argument("--message_tokens", type=int, default=16)
    p.add_argument("--scratch_samples", type=int, default=2)
    p.add_argument("--store_samples", type=int, default=3, help="sessions resumed from the store")
    p.add_argument("--ratio", type=int, default=8)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--sinks", type=int, default=4)


def run(args, out, deadline):
    for name in [n for n in args.policies.split(",") if n]:
        if deadline - time.monotonic() < 60:
            out.emit({"part": "svc-resume", "policy": name, "skipped": "budget"})
            continue
        partial = {"part": "svc-resume", "policy": name}
        try:
            out.emit(one_policy(args, name, deadline, partial))
        except BaseException as error:  # failed or cut off (SIGTERM): keep what was measured
            partial["error"] = f"{type(error).__name__}: {error}"[:3000]
            out.emit(partial)
            if not isinstance(error, Exception):
                raise


def ttft(stub, session_id, message):
    r = timed_generate(stub, session_id, message, 900, max_tokens=2, temperature=0.0)
    return (r["first_or_end"] - r["sent"]) * 1e3, r["usage"]


def warm_up(client, stub, policy, rng):
    sid = client.create_session("", policy=policy).session_id
    fill_context(client, sid, 1024, 1024, rng)
    ttft(stub, sid, text_of(16, rng))
    client.delete_session(sid)


def one_policy(args, name, deadline, rec):
    if name == "full":
        raise ValueError("full: one --context-token turn commits one value of 8 bytes per K/V "
                         "element, past RocksDB's 4 GiB at 32K on 8B; use gist, pool or window")
    policy = policy_of(name, args.ratio, args.window, args.sinks)
    rng = random.Random(7)
    db = fresh_dir(f"{args.work}/resume-{name}")
    pool = int(args.pool_gib * (1 << 30))
    common = ["--kv_pool_bytes", str(pool), "--max_request_tokens", str(args.context + 64),
              *args.server_flags]
    rec.update({"ratio": policy.ratio, "window": policy.window, "sinks": policy.sink_tokens,
                "context": args.context, "message_tokens": args.message_tokens, "scratch_ms": [],
                "store_ms": [], "host_ms": [], "resident_ms": [], "parked": []})
    one = Server(args.server, args.model, args.device, db, common + ["--max_cache_bytes", str(pool)],
                 args.server_log, f"resume {name} (1)", start_timeout=args.start_timeout)
    rec["server_start_s"] = round(one.start_s, 1)
    stubs = Stubs(one.address)
    try:
        with GistmemClient(one.address, timeout=900, turn_retries=0) as client:
            stub = stubs.stub(0)
            warm_up(client, stub, policy, rng)
            sessions = []
            for i in range(args.scratch_samples):
                # Another re-read only while the restart and the resumed turns keep their time.
                if i and deadline - time.monotonic() < 3 * max(rec["scratch_ms"]) / 1e3 + 120:
                    break
                sid = client.create_session("", policy=policy).session_id
                ms, usage = ttft(stub, sid, text_of(args.context - 10, rng))
                rec["scratch_ms"].append(ms)
                rec["scratch_prompt_tokens"] = usage.prompt_tokens
                sessions.append(sid)
            s0 = sessions[0]
            rec["resident_ms"].append(ttft(stub, s0, text_of(args.message_tokens, rng))[0])
            stats = client.stats(s0)
            session_bytes = stats.bytes_gpu + stats.bytes_host
            rec.update(stream_tokens=stats.stream_tokens, raw_tokens=stats.raw_tokens,
                       retained_entries=stats.retained_entries, bytes_per_session=session_bytes,
                       bytes_disk_per_session=stats.bytes_disk)
            resumed = [s0] + [client.fork_session(s0).session_id
                              for _ in range(max(1, args.store_samples - 1))]
    finally:
        stubs.close()
        stopped = time.monotonic()
        rec["server_exit_1"], _ = one.stop()
    flags = common + ["--max_cache_bytes", str(int(1.5 * session_bytes)),
                      "--host_cache_bytes", str(4 * session_bytes)]
    two = Server(args.server, args.model, args.device, db, flags, args.server_log,
                 f"resume {name} (2)", start_timeout=args.start_timeout)
    rec["restart_s"] = round(time.monotonic() - stopped, 1)
    rec["server_start_s_2"] = round(two.start_s, 1)
    stubs = Stubs(two.address)
    try:
        with GistmemClient(two.address, timeout=900, turn_retries=0) as client:
            stub = stubs.stub(0)
            warm_up(client, stub, policy, rng)
            message = lambda: text_of(args.message_tokens, rng)

            def host(sid):
                stats = client.stats(sid)  # parked on a GPU server: bytes_gpu 0, bytes_host > 0
                rec["parked"].append({"bytes_gpu": stats.bytes_gpu, "bytes_host": stats.bytes_host})
                rec["host_ms"].append(ttft(stub, sid, message())[0])

            s0, s1 = resumed[0], resumed[1]
            rec["store_ms"].append(ttft(stub, s0, message())[0])
            rec["store_ms"].append(ttft(stub, s1, message())[0])
            host(s0)
            host(s1)
            for sid in resumed[2:]:
                rec["store_ms"].append(ttft(stub, sid, message())[0])
            rec["resident_ms"].append(ttft(stub, resumed[-1], message())[0])
    finally:
        stubs.close()
        rec["server_exit_2"], _ = two.stop()
        fresh_dir(db)
    scratch = statistics.median(rec["scratch_ms"])
    for kind in ("store", "host", "resident"):
        values = rec[f"{kind}_ms"]
        if values:
            rec[f"{kind}_median_ms"] = statistics.median(values)
            rec[f"{kind}_vs_scratch"] = rec[f"{kind}_median_ms"] / scratch
    rec["scratch_median_ms"] = scratch
    return rec
