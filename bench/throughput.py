#!/usr/bin/env python3
"""HTTP throughput and latency of /validate with a real load generator (wrk).

Starts `portcullis serve` (13-policy set, workers = CPUs) on 127.0.0.1 and
drives keep-alive load at 1, 8, 32 and 128 connections against the
pod-privileged policy and the Python deny-labels policy. Each cell is the
median of several wrk runs. Prints a Markdown table.

    python3 bench/throughput.py [--runs 3] [--seconds 10] [--server-arg=--keep-resident-bytes=1048576]

wrk comes from Debian (`apt-get install wrk`); the script installs it if missing.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile

from common import REQUESTS, Server, build, machine, scratch_dir

TARGETS = [("privileged-pods", "privileged-pod"), ("deny-labels", "labelled-pod")]
CONNECTIONS = [1, 8, 32, 128]

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("PORTCULLIS_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
"""


def ensure_wrk():
    if shutil.which("wrk"):
        return
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)


def to_ms(text):
    value, unit = float(re.match(r"([\d.]+)", text).group(1)), re.sub(r"[\d.]", "", text)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url, body, connections, seconds, script):
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "-s", script, url],
        env={**os.environ, "PORTCULLIS_BODY": str(body)}, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return rps, p50, p99, errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `portcullis serve` argument (repeatable), e.g. --keep-resident-bytes=1048576")
    args = parser.parse_args()
    ensure_wrk()
    if not args.no_build:
        build()
    cache_dir = scratch_dir()
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(LUA)
    script.close()
    server = Server(args.workers, cache_dir=cache_dir, extra_args=args.server_arg)
    rows = []
    try:
        for policy, request in TARGETS:
            url = f"http://{server.api}/validate/{policy}"
            body = REQUESTS / f"{request}.json"
            expected = server.post(policy, body.read_bytes())["response"]["allowed"]
            assert expected is False, f"{policy} should reject {request}"
            for connections in CONNECTIONS:
                runs = [run_wrk(url, body, connections, args.seconds, script.name) for _ in range(args.runs)]
                rows.append((policy, connections,
                             statistics.median(r[0] for r in runs),
                             statistics.median(r[1] for r in runs),
                             statistics.median(r[2] for r in runs),
                             sum(r[3] for r in runs)))
    finally:
        server.stop()
        os.unlink(script.name)
        shutil.rmtree(cache_dir, ignore_errors=True)

    print(f"Machine: {machine()}; server --workers {args.workers} {' '.join(args.server_arg)}; wrk on the same machine "
          f"(2 threads, keep-alive); {args.runs} runs x {args.seconds} s, medians.\n")
    print("| policy | connections | req/s | p50 (ms) | p99 (ms) | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for policy, connections, rps, p50, p99, errors in rows:
        print(f"| {policy} | {connections} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} |")


if __name__ == "__main__":
    main()
