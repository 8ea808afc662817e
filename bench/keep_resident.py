#!/usr/bin/env python3
"""What `serve --keep-resident-bytes` buys: resets and throughput per budget.

For each budget (default 0, 65536, 1048576), in interleaved rounds so that
every budget sees the same minutes of this noisy machine:

  * the number of `madvise` and `ioctl` (PAGEMAP_SCAN) system calls per
    evaluation, counted with `strace -f` over sequential requests (skipped
    when strace is not installed: `apt-get install strace`);
  * req/s, p50 and p99 of wrk at 32 connections against pod-privileged.

Prints a Markdown table: one row per budget, every run's req/s and the medians.
"""

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time

import load
from common import REQUESTS, Server, build, machine, scratch_dir

POLICY, REQUEST = "privileged-pods", "privileged-pod"


def syscalls_per_evaluation(server, body, requests=100):
    """(madvise, ioctl) calls per evaluation, or None without strace."""
    if not shutil.which("strace"):
        return None
    for _ in range(20):  # every slot the sequential requests use is warm
        server.post(POLICY, body)
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=madvise,ioctl", "-o", log.name,
                                   "-p", str(server.process.pid)], stderr=subprocess.DEVNULL)
        time.sleep(1)  # attached to every thread before the first request
        for _ in range(requests):
            server.post(POLICY, body)
        tracer.terminate()
        tracer.wait(timeout=30)
        text = log.read()
    calls = [line.split()[1].split("(")[0] for line in text.splitlines() if "(" in line]
    return calls.count("madvise") / requests, calls.count("ioctl") / requests


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="0,65536,1048576", help="comma-separated byte counts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per budget and round")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    load.ensure_wrk()
    if not args.no_build:
        build()
    budgets = [int(b) for b in args.budgets.split(",")]
    body_path = REQUESTS / f"{REQUEST}.json"
    body = body_path.read_bytes()
    cache_dir = scratch_dir()
    script = load.lua_script(cache_dir)
    runs = {budget: [] for budget in budgets}
    calls = {}
    try:
        for _ in range(args.rounds):
            for budget in budgets:
                server = Server(args.workers, cache_dir=cache_dir,
                                extra_args=[f"--keep-resident-bytes={budget}"])
                try:
                    assert server.post(POLICY, body)["response"]["allowed"] is False
                    if budget not in calls:
                        calls[budget] = syscalls_per_evaluation(server, body)
                    load.wrk(server, POLICY, body_path, args.connections, 1, script)  # warm-up
                    runs[budget] += [load.wrk(server, POLICY, body_path, args.connections, args.seconds, script)
                                     for _ in range(args.runs)]
                finally:
                    server.stop()
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    print(f"Machine: {machine()}; {POLICY}, serve --workers {args.workers}; wrk on the same machine "
          f"(2 threads, {args.connections} connections, keep-alive); {args.rounds} interleaved rounds x "
          f"{args.runs} runs x {args.seconds} s.\n")
    print("| --keep-resident-bytes | madvise / evaluation | PAGEMAP_SCAN / evaluation | req/s, every run "
          "| median req/s | median p50 (ms) | median p99 (ms) | server CPU (µs/request) | errors |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for budget in budgets:
        madvise, ioctl = calls[budget] or ("n/a", "n/a")
        every = " · ".join(f"{r.rps:,.0f}" for r in runs[budget])
        print(f"| {budget} | {madvise} | {ioctl} | {every} "
              f"| {statistics.median(r.rps for r in runs[budget]):,.0f} "
              f"| {statistics.median(r.p50_ms for r in runs[budget]):.2f} "
              f"| {statistics.median(r.p99_ms for r in runs[budget]):.2f} "
              f"| {statistics.median(r.cpu_us_per_request for r in runs[budget]):.0f} "
              f"| {sum(r.errors for r in runs[budget])} |")


if __name__ == "__main__":
    main()
