#!/usr/bin/env python3
"""Start-up: time from process start to /readiness = 200 for the 13-policy
set, with an empty compiled cache and with a warm one. Prints a Markdown table
of medians.

    python3 bench/startup.py [--runs 5]
"""

import argparse
import http.client
import shutil
import statistics
import subprocess
import time

from common import BINARY, COMPONENTS, build, machine, scratch_dir


def time_to_ready(cache_dir):
    """Seconds from spawn to the first 200 from /readiness."""
    # No --policies: the embedded default is the 13-policy set.
    args = [str(BINARY), "serve", "--addr", "127.0.0.1", "--port", "0", "--readiness-probe-port", "0",
            "--components-dir", str(COMPONENTS), "--log-fmt", "json",
            "--log-level", "warn,portcullis::server=info", "--cache-dir", str(cache_dir)]
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The probe port is ephemeral: the server logs it as soon as the probe
        # listener is bound, before loading policies; then poll it.
        probes = None
        for line in process.stderr:
            if '"probes listening' in line:
                probes = line.split('"readiness_addr":"', 1)[1].split('"', 1)[0]
                break
        if probes is None:
            raise SystemExit("portcullis serve did not start")
        # One kept-alive connection, polled every millisecond: a new
        # connection (and urllib) per poll would take CPU from the server
        # it is timing on a 2-core machine.
        host, port = probes.rsplit(":", 1)
        connection = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"portcullis serve exited with {process.returncode} before it was ready")
            try:
                connection = connection or http.client.HTTPConnection(host, int(port), timeout=5)
                connection.request("GET", "/readiness")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    return time.perf_counter() - started
            except (OSError, http.client.HTTPException):
                connection = None
            time.sleep(0.001)
        raise SystemExit("never ready")
    finally:
        process.terminate()
        process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build()
    cold, warm = [], []
    for _ in range(args.runs):
        cache_dir = scratch_dir()
        cold.append(time_to_ready(cache_dir))
        warm.append(time_to_ready(cache_dir))
        shutil.rmtree(cache_dir, ignore_errors=True)
    print(f"Machine: {machine()}; 13 policies / 5 unique components; {args.runs} runs, medians.\n")
    print("| compiled cache | time to /readiness = 200 (ms) | min | max |")
    print("|---|---:|---:|---:|")
    for name, values in (("empty (compile everything)", cold), ("warm", warm)):
        ms = [v * 1000 for v in values]
        print(f"| {name} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |")


if __name__ == "__main__":
    main()
