#!/usr/bin/env python3
"""Reload under load: `serve --watch` while its policies file is rewritten.

Starts `portcullis serve --watch` (release build, workers = CPUs) on
127.0.0.1 and drives wrk at 32 keep-alive connections against a policy that
every version of the configuration keeps. Each run is two wrk runs of the
same length: one with the configuration left alone, one while the file is
rewritten 20 times (policies added, removed, changed; one version invalid,
which must change nothing). Prints the Markdown record for BENCHMARKS.md:
requests, reloads (ok / error, from the server's metrics), errors (non-2xx
and socket errors, from wrk), p50 and p99 with and without reloads, and RSS
before and after (back on the first configuration). Medians of the runs.

    python3 bench/reload.py [--runs 3] [--seconds 20] [--no-build]

wrk comes from Debian (`apt-get install wrk`); the script installs it if missing.
"""

import argparse
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request

from common import COMPONENTS, REQUESTS, Server, build, machine, scratch_dir
from throughput import LUA, ensure_wrk, run_wrk

CONNECTIONS = 32
VERSIONS = 20
INVALID = 13


def version(i):
    """Version `i` of the policies file (the last returns to the first)."""
    shape = 0 if i == VERSIONS else i
    module = lambda name: COMPONENTS / name  # noqa: E731
    text = (f"stable:\n  module: {module('pod_privileged.wasm')}\n  message: v{i}\n"
            f"trusted:\n  module: {module('trusted_images.wasm')}\n"
            f"  settings: {{ allowedRegistries: [\"r{shape}.example.com\"] }}\n")
    if shape % 2 == 0 and shape:
        text += (f"extra-{shape}:\n  module: {module('sleeping.wasm')}\n"
                 f"  settings: {{ sleepMilliseconds: 1 }}\n")
    if shape % 3 == 0 and shape:
        text += (f"group:\n  expression: \"a() || b()\"\n  message: group v{i}\n  policies:\n"
                 f"    a: {{ module: {module('pod_privileged.wasm')} }}\n"
                 f"    b: {{ module: {module('disallow_service_loadbalancer.wasm')} }}\n")
    if i == INVALID:
        text += f"broken:\n  module: {module('sleeping.wasm')}\n  settings: {{ sleepMilliseconds: 0 }}\n"
    return text


def replace(path, text):
    """Writes as editors and ConfigMaps do: a new file renamed over the old."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def reloads(server):
    with urllib.request.urlopen(f"http://{server.probes}/metrics", timeout=10) as response:
        text = response.read().decode()
    count = lambda result: int(next(  # noqa: E731
        (m.group(1) for m in re.finditer(rf'^portcullis_config_reloads_total{{result="{result}"}} (\d+)', text, re.M)),
        0))
    return count("ok"), count("error")


def rewrite(path, seconds):
    """Rewrites the file VERSIONS times, evenly over most of `seconds`."""
    pause = seconds * 0.8 / VERSIONS
    time.sleep(seconds * 0.1)
    for i in range(1, VERSIONS + 1):
        replace(path, version(i))
        time.sleep(pause)


def one_run(seconds, workers, cache_dir, script):
    directory = tempfile.mkdtemp(prefix="portcullis-reload-")
    path = os.path.join(directory, "policies.yml")
    replace(path, version(0))
    server = Server(workers, policies=path, cache_dir=cache_dir, extra_args=["--watch"])
    try:
        url = f"http://{server.api}/validate/stable"
        body = REQUESTS / "privileged-pod.json"
        run_wrk(url, body, CONNECTIONS, 3, script)  # warm-up
        time.sleep(3)
        rss_before = server.memory_kib()[0]
        quiet = run_wrk(url, body, CONNECTIONS, seconds, script)
        writer = threading.Thread(target=rewrite, args=(path, seconds))
        writer.start()
        during = run_wrk(url, body, CONNECTIONS, seconds, script)
        writer.join()
        deadline = time.monotonic() + 60
        while sum(reloads(server)) < VERSIONS and time.monotonic() < deadline:
            time.sleep(0.2)
        ok, error = reloads(server)
        time.sleep(5)
        rss_after = server.memory_kib()[0]
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    # wrk reports rps; requests = rps x seconds.
    return {
        "quiet_requests": quiet[0] * seconds, "quiet_p50": quiet[1], "quiet_p99": quiet[2], "quiet_errors": quiet[3],
        "requests": during[0] * seconds, "p50": during[1], "p99": during[2], "errors": during[3],
        "ok": ok, "error": error, "rss_before": rss_before, "rss_after": rss_after,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    ensure_wrk()
    if not args.no_build:
        build()
    cache_dir = scratch_dir()
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(LUA)
    script.close()
    try:
        runs = [one_run(args.seconds, args.workers, cache_dir, script.name) for _ in range(args.runs)]
    finally:
        os.unlink(script.name)
        shutil.rmtree(cache_dir, ignore_errors=True)
    median = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    print(f"Machine: {machine()}; server --workers {args.workers} --watch; wrk on the same machine "
          f"(2 threads, {CONNECTIONS} keep-alive connections); {args.runs} runs x {args.seconds} s "
          f"per phase, medians (errors and reloads: totals over the runs).\n")
    print("| phase | requests | reloads ok / error | non-2xx + socket errors | p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| no reload | {median('quiet_requests'):,.0f} | – | {sum(r['quiet_errors'] for r in runs)} | "
          f"{median('quiet_p50'):.2f} | {median('quiet_p99'):.2f} |")
    print(f"| {VERSIONS} rewrites (1 invalid) | {median('requests'):,.0f} | "
          f"{sum(r['ok'] for r in runs)} / {sum(r['error'] for r in runs)} | "
          f"{sum(r['errors'] for r in runs)} | {median('p50'):.2f} | {median('p99'):.2f} |")
    print(f"\nRSS before {median('rss_before') / 1024:.1f} MiB, after returning to the first "
          f"configuration {median('rss_after') / 1024:.1f} MiB (medians).")


if __name__ == "__main__":
    main()
