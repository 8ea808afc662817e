#!/usr/bin/env python3
"""HTTP throughput and latency of /validate with a real load generator (wrk).

Starts `portcullis serve` (13-policy set, workers = CPUs) on 127.0.0.1 and
drives keep-alive load at 1, 8, 32 and 128 connections against the
pod-privileged policy and the Python deny-labels policy. Each cell is the
median of several wrk runs, with the server's CPU time per request (its
user + system time over the run / requests: BENCHMARKS.md §3's measure).
Prints a Markdown table.

    python3 bench/throughput.py [--runs 3] [--seconds 10] [--server-arg=--keep-resident-bytes=0]

wrk comes from Debian (`apt-get install wrk`); the script installs it if missing.
"""

import argparse
import os
import shutil
import statistics
import tempfile

import load
from common import REQUESTS, Server, build, machine, scratch_dir

TARGETS = [("privileged-pods", "privileged-pod"), ("deny-labels", "labelled-pod")]
CONNECTIONS = [1, 8, 32, 128]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `portcullis serve` argument (repeatable), e.g. --keep-resident-bytes=0")
    args = parser.parse_args()
    load.ensure_wrk()
    if not args.no_build:
        build()
    cache_dir = scratch_dir()
    scripts = tempfile.mkdtemp(prefix="portcullis-wrk-")
    script = load.lua_script(scripts)
    server = Server(args.workers, cache_dir=cache_dir, extra_args=args.server_arg)
    rows = []
    try:
        for policy, request in TARGETS:
            body = REQUESTS / f"{request}.json"
            expected = server.post(policy, body.read_bytes())["response"]["allowed"]
            assert expected is False, f"{policy} should reject {request}"
            for connections in CONNECTIONS:
                runs = [load.wrk(server, policy, body, connections, args.seconds, script)
                        for _ in range(args.runs)]
                rows.append((policy, connections,
                             statistics.median(r.rps for r in runs),
                             statistics.median(r.p50_ms for r in runs),
                             statistics.median(r.p99_ms for r in runs),
                             statistics.median(r.cpu_us_per_request for r in runs),
                             sum(r.errors for r in runs)))
    finally:
        server.stop()
        shutil.rmtree(scripts, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)

    print(f"Machine: {machine()}; server --workers {args.workers} {' '.join(args.server_arg)}; wrk on the same machine "
          f"(2 threads, keep-alive); {args.runs} runs x {args.seconds} s, medians.\n")
    print("| policy | connections | req/s | p50 (ms) | p99 (ms) | server CPU (µs/request) | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for policy, connections, rps, p50, p99, cpu, errors in rows:
        print(f"| {policy} | {connections} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {cpu:.0f} | {errors} |")


if __name__ == "__main__":
    main()
