#!/usr/bin/env python3
"""Markdown of the service rows (bench/gpu/service_bench.py's JSON lines), for
bench/RESULTS-gpu.md. Prints only what the lines hold: a row that was not measured says why.

    python3 bench/gpu/service_summary.py service.jsonl > service.md
"""

import json
import sys

GIB = 1 << 30


def fmt(x, digits=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def pq(s, key):
    return fmt(s.get(key)) if s else "-"


def policy_name(r):
    if r["policy"] == "full":
        return "full"
    if r["policy"] == "window":
        return f"window W={r['window']} S={r['sinks']}"
    return f"{r['policy']} r={r['ratio']} W={r['window']} S={r['sinks']}"


def capacity(rows):
    print("### Service capacity (gistmem-server, through gRPC)\n")
    print("| model | policy | context (raw) | KiB/session | KV pool GiB | sessions held | capped by "
          "| decoding at once | aggregate tok/s (steady) | tok/s (whole round) | inter-token p50 / p99 ms "
          "| by arithmetic: at this pool / at the arith pool |")
    print("| --- " * 12 + "|")
    held = {}
    for r in rows:
        if "skipped" in r or "error" in r:
            print(f"| {r.get('label')} | {r['policy']} | | | | | "
                  f"{'skipped: ' + r['skipped'] if 'skipped' in r else 'error: ' + r['error'][:200]} | | | | | |")
            continue
        d = r.get("decode") or {}
        per = r.get("bytes_per_session") or 0
        capped = r["capped_by"] + (f" ({r['capped_detail'][:80]})" if r.get("capped_detail") else "")
        decoding = d.get("sessions", "-")
        if d.get("deleted_for_room"):
            decoding = f"{decoding} ({d['deleted_for_room']} deleted for room)"
        if d.get("error"):
            decoding = f"{decoding}: {d['error']}"
        itl = d.get("itl_ms") or {}
        print(f"| {r.get('label')} | {policy_name(r)} | {r.get('context_raw_tokens')} | {per / 1024:.0f} "
              f"| {r['kv_pool_bytes'] / GIB:.3g} | {r['sessions_held']} | {capped} | {decoding} "
              f"| {fmt(d.get('steady_tok_per_s'))} | {fmt(d.get('tok_per_s'))} "
              f"| {pq(itl, 'p50')} / {pq(itl, 'p99')} "
              f"| {r.get('sessions_by_arithmetic', '-')} / {r.get('sessions_by_arithmetic_at_arith_pool', '-')} "
              f"({r.get('arith_pool_bytes', 0) / GIB:.0f} GiB) |")
        held[r["policy"]] = (r["sessions_held"], d.get("sessions"), d.get("steady_tok_per_s"),
                             r.get("sessions_by_arithmetic_at_arith_pool"))
    if "gist" in held and "full" in held:
        g, f = held["gist"], held["full"]
        print(f"\ngist / full, same pool: sessions held {g[0]} / {f[0]}"
              + (f" = {g[0] / f[0]:.2f}x" if f[0] else "")
              + (f"; steady aggregate tok/s {g[2]:.1f} / {f[2]:.1f} = {g[2] / f[2]:.2f}x" if g[2] and f[2] else "")
              + (f"; by arithmetic at the arith pool {g[3]} / {f[3]}" if g[3] and f[3] else "")
              + " (targets: >= 7x sessions, >= 6x tok/s)")
    for r in rows:
        if "fill_s" in r:
            print(f"\n- {r['policy']}: source read its context in {r['source_fill_s']} s; fill "
                  f"({r['fill']}) {r['fill_s']} s, one clone p50 {pq(r.get('clone_s'), 'p50')} s; "
                  f"fill errors {r.get('fill_errors') or 'none'}; server metrics sessions gpu "
                  f"{fmt(r.get('sessions_gpu'), 0)}, host {fmt(r.get('sessions_host'), 0)}; store "
                  f"{(r.get('bytes_disk_per_session') or 0) / 2**20:.0f} MiB/session; server start "
                  f"{r.get('server_start_s')} s", end="")
    print("\n")


def resume(rows):
    print("### Service resume (TTFT at the client, ms)\n")
    print("| model | policy | context | scratch (re-read) | from the store after restart | vs scratch "
          "| from the host tier | vs scratch | resident | parked before host turns | restart s |")
    print("| --- " * 11 + "|")
    for r in rows:
        if "skipped" in r or "error" in r:
            print(f"| {r.get('label')} | {r['policy']} | | {r.get('skipped') or r.get('error', '')[:200]} "
                  "| | | | | | | |")
            continue
        ms = lambda k: ", ".join(f"{x:.0f}" for x in r[k])
        parked = "; ".join(f"gpu {p['bytes_gpu']} host {p['bytes_host']}" for p in r["parked"])
        print(f"| {r.get('label')} | {policy_name(r)} | {r['raw_tokens']} | {ms('scratch_ms')} "
              f"| {ms('store_ms')} | {fmt(100 * r['store_vs_scratch'])}% | {ms('host_ms')} "
              f"| {fmt(100 * r['host_vs_scratch'])}% | {ms('resident_ms')} | {parked} "
              f"| {r.get('restart_s')} |")
    print("\n(target: resume <= 5% of scratch; ratios use the medians)\n")


def streams(rows):
    print("### Service streams (bench/load/load.py against gistmem-server)\n")
    print("| model | policy | streams | turns | tokens/s | TTFT p50 / p99 ms | inter-token p50 / p99 ms "
          "| errors |")
    print("| --- " * 8 + "|")
    for r in rows:
        if "concurrency" not in r:
            print(f"| {r.get('label')} | {r['policy']} | | | | {r.get('error', '')[:200]} | | |")
            continue
        if "skipped" in r:
            print(f"| {r.get('label')} | {r['policy']} | {r['concurrency']} | skipped: {r['skipped']} | | | | |")
            continue
        t, i = r.get("ttft_ms"), r.get("itl_ms")
        errors = r["errors"] or "none"
        if r.get("generator_failures"):
            errors = f"{errors}; {len(r['generator_failures'])} generator(s) failed"
        print(f"| {r.get('label')} | {r['policy']} | {r['concurrency']} | {r['turns']} "
              f"| {fmt(r.get('tokens_per_s'))} | {pq(t, 'p50')} / {pq(t, 'p99')} "
              f"| {pq(i, 'p50')} / {pq(i, 'p99')} | {errors} |")
    print()


def main():
    rows = []
    for path in sys.argv[1:]:
        try:
            with open(path) as f:
                rows += [json.loads(line) for line in f if line.startswith("{")]
        except FileNotFoundError:
            pass
    for part, show in (("svc-capacity", capacity), ("svc-resume", resume), ("svc-streams", streams)):
        mine = [r for r in rows if r.get("part") == part]
        if mine:
            show(mine)


if __name__ == "__main__":
    main()
