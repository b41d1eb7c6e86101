#!/usr/bin/env python3
"""Where a run's GPU time goes, from `ncu --csv --metrics gpu__time_duration.sum` output.

    python3 bench/gpu/ncu_summary.py ncu.csv [--steps N] [--top K]

Prints, per kernel name (namespaces, template arguments and parameters cut), the launches, total
and mean time, and its share of all profiled time; with --steps N, also each kernel's time per
step (total / N), for a run whose profiled launches are N identical steps plus a little setup. ncu replays each
kernel alone (serialised, no overlap), so the sums are kernel time, not wall time: the gap to a
step's measured time is launch latency and host work.
"""
import argparse
import collections
import csv
import io
import sys

UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
         "second": 1e6, "s": 1e6}


def short(name):
    for anonymous in ("(anonymous namespace)::", "<unnamed>::"):
        name = name.replace(anonymous, "")
    for cut in ("<", "("):
        if cut in name:
            name = name[: name.index(cut)]
    name = name.replace("void ", "").strip()
    return name.split("::")[-1] if "::" in name else name


def rows(text):
    # ncu prints its own "==PROF==" lines before the CSV header: start at the header.
    start = text.find('"ID"')
    if start < 0:
        return []
    return list(csv.DictReader(io.StringIO(text[start:])))


def summarize(text):
    """(total microseconds, launches) per short kernel name, and the number of launches."""
    kernels = [r for r in rows(text) if r.get("Metric Name") == "gpu__time_duration.sum"]
    total = collections.Counter()
    count = collections.Counter()
    for r in kernels:
        unit = r["Metric Unit"]
        if unit not in UNITS:
            raise ValueError(f"unknown time unit {unit!r}")
        us = float(r["Metric Value"].replace(",", "")) * UNITS[unit]
        name = short(r["Kernel Name"])
        total[name] += us
        count[name] += 1
    return total, count, len(kernels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    total, count, launches = summarize(open(a.csv, errors="replace").read())
    if not launches:
        print(f"no gpu__time_duration rows in {a.csv}")
        return 1
    whole = sum(total.values())
    print(f"{launches} launches, {whole / 1e3:.3f} ms of kernel time")
    head = "| kernel | launches | total ms | mean us | share |"
    if a.steps:
        head += " per step us |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for name, us in total.most_common(a.top):
        line = f"| {name[:70]} | {count[name]} | {us / 1e3:.3f} | {us / count[name]:.1f} | {us / whole:.1%} |"
        if a.steps:
            line += f" {us / a.steps:.1f} |"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
