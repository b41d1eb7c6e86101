#!/usr/bin/env python3
"""Issue 13's service rows: the real gistmem-server (bench/gpu/pack-service.sh's bundle on the
GPU machine, `--device cuda`) driven over gRPC by the Python client, one part per call:

  capacity  sessions of --context tokens one server holds per policy, and their aggregate
            decode rate (bench/gpu/svc_capacity.py)
  resume    TTFT of a long session back from the store after a restart and from the host tier,
            against re-reading it from scratch (bench/gpu/svc_resume.py)
  streams   bench/load/load.py at 1..256 concurrent streams: TTFT, inter-token p50/p99
            (bench/gpu/svc_streams.py)

Every result is one JSON line appended to --out (bench/gpu/service_summary.py makes the
markdown); the servers' output goes to --server_log. The part stops starting work once
--budget_s is spent. bench/gpu/run.sh (PARTS svc-capacity, svc-resume, svc-streams) runs it:

  python3 bench/gpu/service_bench.py --server /tmp/gsv/bin/gistmem-server \\
      --model /tmp/gistmem-ckpt/llama-8b --out service.jsonl capacity --policies gist,full
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc_capacity  # noqa: E402
import svc_resume  # noqa: E402
import svc_streams  # noqa: E402
from svc_common import SETTINGS, Output, ensure_serving_files  # noqa: E402

PARTS = {"capacity": svc_capacity, "resume": svc_resume, "streams": svc_streams}


def main():
    started = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="gistmem-server binary")
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--label", default="", help="e.g. llama-8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--work", default="/tmp/gistmem-svc-bench", help="stores and scratch files")
    parser.add_argument("--out", required=True, help="JSON lines are appended here")
    parser.add_argument("--server_log", default="", help="default: WORK/server.log")
    parser.add_argument("--budget_s", type=float, default=300)
    parser.add_argument("--start_timeout", type=float, default=300, help="server start, seconds")
    parser.add_argument("--server_lib", default="",
                        help="LD_LIBRARY_PATH of the server alone (the bundle's libraries)")
    parser.add_argument("--server_flag", dest="server_flags", action="append", default=[],
                        help="one more gistmem-server flag, e.g. --server_flag=--prefill_chunk=512")
    sub = parser.add_subparsers(dest="part", required=True)
    for name, module in PARTS.items():
        module.add_arguments(sub.add_parser(name, help=module.__doc__.split("\n")[0]))
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    args.server_log = args.server_log or os.path.join(args.work, "server.log")
    if not os.access(args.server, os.X_OK):
        sys.exit(f"service_bench: {args.server} is not an executable (bench/gpu/pack-service.sh)")
    ensure_serving_files(args.model)
    SETTINGS.update(pidfile=os.path.join(args.work, "server.pids"), server_lib=args.server_lib)
    # `timeout` sends SIGTERM: unwind, so that every started server is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("service_bench: SIGTERM, stopping"))
    out = Output(args.out, {"label": args.label, "device": args.device})
    PARTS[args.part].run(args, out, started + args.budget_s)


if __name__ == "__main__":
    main()
