#!/usr/bin/env python3
"""Portcullis beside Kubewarden's policy-server: the same policies, the same
machine, the same load generators, in the same minutes (issue 15).

    python3 bench/compare_kubewarden.py --kubewarden-bin PATH [--rounds 3] [--seconds 5]
    python3 bench/compare_kubewarden.py            # Portcullis alone, and it says so

Both servers run in one network namespace with only loopback up (created here
and deleted afterwards; needs root and `ip`): Kubewarden downloads sigstore
trust data at start, which fails at once there. Every part runs in rounds,
and inside a round the servers take turns cell by cell (the order reversed
every other time), so each ratio compares figures taken minutes apart at
most: this VM's throughput moves by ±30 % within an hour. Each figure is the
median over the rounds.

  * Throughput (`http1`, `h2`): Kubewarden with the Kubewarden-protocol
    pod-privileged module (tests/kubewarden-policies/pod-privileged, annotated),
    Portcullis with the same module, and Portcullis with its own pod-privileged
    component; the privileged pod's review (bench/requests/privileged-pod.json),
    rejected by all three. HTTP/1.1 in clear text with wrk, and TLS 1.3 +
    HTTP/2 with h2load, at 1, 8, 32 and 128 concurrent connections / streams
    (HTTP/2: at most 32 streams a connection, as the API server's Go client
    opens another connection at Portcullis's stream limit; a server that
    offers no h2 by ALPN — Kubewarden 1.31 — gets TLS 1.3 + HTTP/1.1, one
    connection per request in flight, as that client would send). Both servers
    `--workers 2`. req/s, p99, and the server's CPU time per request
    (user + system of the server process over the run / requests).
  * Memory (`rss`): VmRSS (and its anonymous part, RssAnon: what is not
    the executable's and libraries' own pages) at 1..8 workers serving the 13-policy set of
    Kubewarden-protocol modules (bench/kubewarden-policies.yml, `file://`
    modules, the same file for both), every policy warmed up on every worker
    (the method of bench/memory.py).
  * Start-up (`startup`): spawn to the first 200 from /readiness for the same
    13-policy set; cold = fresh directories (Portcullis: an empty compiled
    cache; Kubewarden keeps no compiled modules, so it compiles at every
    start), warm = the same directories again.

Prints one table of ratios (Portcullis / Kubewarden) and the issue's goals,
and writes both into BENCHMARKS.md (section 5) with the date and the command
— only when Kubewarden was measured and every part ran (`--write` forces,
`--no-write` prevents). `--perf` adds a `perf record` of each server under
wrk at 32 connections (after the rounds, not counted in them): where its CPU
goes, in µs per request.

The script builds the components and the release host first (`--no-build`
skips) and installs wrk and h2load (Debian packages) when missing. Defaults
take about 10 minutes after the build (2 cores); shorten with --rounds,
--seconds, --connections, --max-workers, --only.
Kubewarden is a prerequisite of this benchmark only, never of scripts/test.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import load
from common import COMPONENTS, KUBEWARDEN_REQUEST_FOR, REQUESTS, ROOT, build
from comparison_report import PARTS, TARGETS, goals, notes, render, table, write_benchmarks
from side_by_side import (can_make_namespace, in_namespace, kubewarden_set, make_tls, policies_yml,
                          rerun_in_namespace, start_kubewarden, start_portcullis)

BODY = REQUESTS / "privileged-pod.json"
KW_MODULE, OWN_COMPONENT = "kw_pod_privileged.wasm", "pod_privileged.wasm"


# The 1-minute load average, sampled at every progress line.
LOADS = []


def log(message):
    LOADS.append(os.getloadavg()[0])
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    """What every part shares: options, scratch directory, TLS material, policies files."""

    def __init__(self, args):
        self.args = args
        self.kw_bin = args.kubewarden_bin
        self.scratch = Path(tempfile.mkdtemp(prefix="portcullis-compare-"))
        self.tls = make_tls(self.scratch)
        self.script = load.lua_script(self.scratch)
        single = f"privileged-pods:\n  module: {KW_MODULE}\n"
        self.kw_single = policies_yml(single, self.scratch / "kw-single.yml")
        self.p_single = policies_yml(single + f"own-privileged-pods:\n  module: {OWN_COMPONENT}\n",
                                     self.scratch / "portcullis-single.yml")
        self.thirteen = kubewarden_set(self.scratch / "kubewarden-13.yml")
        self.cache = self.scratch / "portcullis-cache"

    def kubewarden(self, policies, workers, tag, tls=None, **dirs):
        return start_kubewarden(self.kw_bin, policies, workers, self.scratch, tag, tls, **dirs)

    def portcullis(self, policies, workers, tag, tls=None, cache=None):
        return start_portcullis(policies, workers, self.scratch, tag, cache or self.cache, tls,
                                self.args.server_arg)

    def cleanup(self):
        shutil.rmtree(self.scratch, ignore_errors=True)


def alternate(items, turn):
    return list(items) if turn % 2 == 0 else list(reversed(items))


def stop_all(servers):
    for server in servers.values():
        server.stop()


# --- the parts --------------------------------------------------------------------------------

def start_pair(bench, protocol, tag):
    """Both servers for the throughput rows of `protocol` (idle until their turn)."""
    tls = bench.tls if protocol == "h2" else None
    servers = {}
    try:
        if bench.kw_bin:
            servers["kubewarden"] = bench.kubewarden(bench.kw_single, bench.args.workers, tag, tls)
        servers["portcullis"] = bench.portcullis(bench.p_single, bench.args.workers, tag, tls)
        body = BODY.read_bytes()
        for key, column, side, policy in TARGETS:
            if side in servers:
                answer = servers[side].post(policy, body)["response"]
                if answer["allowed"] is not False:
                    sys.exit(f"{column} allowed the privileged pod: {answer}")
    except BaseException:
        stop_all(servers)
        raise
    return servers


def measure(bench, protocol, server, policy, connections, seconds):
    if protocol == "http1":
        return load.wrk(server, policy, BODY, connections, seconds, bench.script)
    return load.h2load(server, policy, BODY, connections, seconds, bench.scratch / "h2load.log")


def throughput(bench, protocols):
    """{(protocol, target, connections): [Run per round]}"""
    results = defaultdict(list)
    turn = 0
    for rnd in range(bench.args.rounds):
        for protocol in alternate(protocols, rnd):
            servers = start_pair(bench, protocol, f"{protocol}-{rnd}")
            try:
                targets = [t for t in TARGETS if t[2] in servers]
                for connections in bench.args.connections:
                    for key, column, side, policy in alternate(targets, turn):
                        measure(bench, protocol, servers[side], policy, connections, 1)  # warm-up, not counted
                        run = measure(bench, protocol, servers[side], policy, connections, bench.args.seconds)
                        results[(protocol, key, connections)].append(run)
                        log(f"round {rnd + 1} {protocol} {connections:>3} {column:<26} {run.rps:>9,.0f} req/s "
                            f"p99 {run.p99_ms:6.2f} ms {run.cpu_us_per_request:5.0f} µs CPU/req "
                            f"{run.errors} errors, {run.protocol}, {run.shape}")
                    turn += 1
            finally:
                stop_all(servers)
    return results


def warm_up(server, workers, rounds=3):
    """Every policy of the 13-policy set on every worker: `workers` concurrent
    requests per policy, a few rounds (bench/memory.py's method)."""
    failures = []

    def post(policy, body):
        try:
            server.post(policy, body)
        except Exception as error:  # noqa: BLE001 — reported below
            failures.append(error)

    bodies = {request: (REQUESTS / f"{request}.json").read_bytes() for request in KUBEWARDEN_REQUEST_FOR.values()}
    for _ in range(rounds):
        for policy, request in KUBEWARDEN_REQUEST_FOR.items():
            threads = [threading.Thread(target=post, args=(policy, bodies[request])) for _ in range(workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    if failures:
        sys.exit(f"{server.name}: warm-up failed: {failures[0]}")


def memory(bench):
    """{(server, workers): [RSS MB per round], (server, workers, "anon"): [its anonymous part]}"""
    rss = defaultdict(list)
    bench.portcullis(bench.thirteen, 1, "fill-cache").stop()  # samples measure serving, not compiling
    sides = ["kubewarden", "portcullis"] if bench.kw_bin else ["portcullis"]
    turn = 0
    for rnd in range(bench.args.rounds):
        for workers in range(1, bench.args.max_workers + 1):
            for side in alternate(sides, turn):
                tag = f"rss-{rnd}-{workers}"
                server = (bench.kubewarden if side == "kubewarden" else bench.portcullis)(bench.thirteen, workers, tag)
                try:
                    warm_up(server, workers)
                    memory_kib = server.memory_kib()
                    rss[(side, workers)].append(memory_kib["VmRSS"] / 1024)
                    rss[(side, workers, "anon")].append(memory_kib["RssAnon"] / 1024)
                finally:
                    server.stop()
                log(f"round {rnd + 1} rss {side:<10} workers {workers}: {rss[(side, workers)][-1]:.1f} MB")
            turn += 1
    return rss


def startup(bench):
    """{(server, "cold" | "warm"): [seconds per round]}"""
    times = defaultdict(list)
    sides = ["kubewarden", "portcullis"] if bench.kw_bin else ["portcullis"]
    for rnd in range(bench.args.rounds):
        dirs = {"kubewarden": {"download_dir": bench.scratch / f"kw-store-start-{rnd}",
                               "sigstore_dir": bench.scratch / f"kw-sigstore-start-{rnd}"},
                "portcullis": {"cache": bench.scratch / f"cache-start-{rnd}"}}
        for state in ("cold", "warm"):
            for side in alternate(sides, rnd):
                start = bench.kubewarden if side == "kubewarden" else bench.portcullis
                server = start(bench.thirteen, bench.args.workers, f"start-{rnd}-{state}", **dirs[side])
                server.stop()
                times[(side, state)].append(server.ready_s)
                log(f"round {rnd + 1} start {side:<10} {state}: {server.ready_s * 1000:.0f} ms")
    return times


def perf_report(data, sort):
    """[(share %, columns...)] of a `perf report --sort SORT`, flat."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", sort],
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        if line.strip() and not line.startswith("#") and "%" in line:
            share, rest = re.sub(r"\[JIT\] tid \d+", "[JIT]", line).split("%", 1)
            rows.append((float(share), *(rest.split(None, 2) if sort == "dso,sym" else [rest.strip()])))
    return rows


def profile(bench):
    """`perf record` (cpu-clock) of each server under wrk at 32 connections,
    after the measured rounds (the profiler costs CPU); returns {target
    column: (Run, [(share %, dso)], [(share %, dso, symbol)])}."""
    if not shutil.which("perf"):
        subprocess.run(["apt-get", "install", "-y", "linux-perf"], check=True)
    profiles = {}
    servers = start_pair(bench, "http1", "perf")
    try:
        for key, column, side, policy in TARGETS:
            if side not in servers:
                continue
            server = servers[side]
            load.wrk(server, policy, BODY, 32, 1, bench.script)
            data = bench.scratch / f"perf-{key}.data"
            recorder = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999",
                                         "-p", str(server.process.pid), "-o", str(data)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # attached to every thread before the load starts
            run = load.wrk(server, policy, BODY, 32, bench.args.seconds, bench.script)
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
            profiles[column] = (run, perf_report(data, "dso"), perf_report(data, "dso,sym"))
            log(f"perf {column}: {run.rps:,.0f} req/s, {run.cpu_us_per_request:.0f} µs CPU/req")
    finally:
        stop_all(servers)
    return profiles


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubewarden-bin", type=Path, help="a Kubewarden policy-server binary (v1.31.0)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="length of each measured load run")
    parser.add_argument("--connections", default="1,8,32,128",
                        type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument("--workers", type=int, default=2, help="both servers' workers for throughput and start-up")
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(PARTS),
                        help=f"comma-separated parts among {','.join(PARTS)}")
    parser.add_argument("--perf", action="store_true", help="also profile each server (perf) under wrk")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `portcullis serve` argument (repeatable), e.g. --keep-resident-bytes=65536")
    parser.add_argument("--no-build", action="store_true")
    write = parser.add_mutually_exclusive_group()
    write.add_argument("--write", action="store_true", help="write BENCHMARKS.md even for a partial run")
    write.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if unknown := set(args.only) - set(PARTS):
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}: choose among {', '.join(PARTS)}")
    if args.kubewarden_bin:
        args.kubewarden_bin = args.kubewarden_bin.resolve()
        if not os.access(args.kubewarden_bin, os.X_OK):
            parser.error(f"--kubewarden-bin {args.kubewarden_bin}: not an executable file")

    if in_namespace() is None:
        load.ensure_tools()
        if not args.no_build:
            build()
        for module in (KW_MODULE, OWN_COMPONENT):
            if not (COMPONENTS / module).is_file():
                sys.exit(f"{COMPONENTS / module} is missing: run scripts/build-components")
        if can_make_namespace():
            sys.exit(rerun_in_namespace([str(Path(__file__).resolve()), *sys.argv[1:]]))
        if args.kubewarden_bin:
            sys.exit("running Kubewarden needs a network namespace: run as root with `ip` (iproute2) installed")
        log("not root: Portcullis alone, on the machine's loopback (no network namespace)")

    if not args.kubewarden_bin:
        log("no --kubewarden-bin: measuring Portcullis alone; the ratio columns stay empty")
    bench = Bench(args)
    log(f"load average {os.getloadavg()[0]:.1f}")
    results, rss, starts, profiles = {}, {}, {}, {}
    try:
        protocols = [p for p in ("http1", "h2") if p in args.only]
        if protocols:
            results = throughput(bench, protocols)
        if "rss" in args.only:
            rss = memory(bench)
        if "startup" in args.only:
            starts = startup(bench)
        if args.perf:
            profiles = profile(bench)
    finally:
        bench.cleanup()
    log(f"load average {os.getloadavg()[0]:.1f}")

    text = render(bench, table(bench, results, rss, starts), goals(bench, results, rss, starts),
                  notes(results), LOADS, profiles)
    print(text)
    complete = bool(args.kubewarden_bin) and set(args.only) == set(PARTS)
    if args.write or (complete and not args.no_write):
        log(f"wrote section 5 of {write_benchmarks(text).relative_to(ROOT)}")
    elif not args.no_write:
        print("\nBENCHMARKS.md left as it was: "
              + ("Kubewarden was not measured." if not args.kubewarden_bin else "not every part ran (--only).")
              + " (--write writes it anyway.)", file=sys.stderr)


if __name__ == "__main__":
    main()
