#!/usr/bin/env python3
"""Server CPU time and context switches per request, for variants of the
server compared in interleaved rounds (the method of BENCHMARKS.md §3).

Each variant is `NAME=SPEC`, SPEC a comma-separated list of
`binary:PATH` (another build of portcullis), `policy:PATH` (the
pod-privileged component to serve, e.g. one built with another profile) and
`arg:--flag=value` (extra `serve` arguments); an empty SPEC is the default
build with the default component. Every round runs each variant once, in
turn (reversed every other round), so all of them see the same minutes of
this shared machine; each cell is the median over the rounds.

    python3 bench/cpu_per_request.py                        # the default alone
    python3 bench/cpu_per_request.py --variant flat=arg:--keep-resident-bytes=0 \\
        --variant before=binary:/tmp/portcullis-old,policy:/tmp/pod_privileged-s.wasm

Per run: a fresh `portcullis serve --workers 2` with the pod-privileged
policy, a 2 s warm-up, then wrk (2 threads, keep-alive) for --seconds at
--connections POSTing the privileged pod's review. CPU is the server
process's user + system time over the run / requests; context switches are
the sum over its threads from /proc.
"""

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import load
from common import BINARY, COMPONENTS, REQUESTS, Server, build, machine, scratch_dir

BODY = REQUESTS / "privileged-pod.json"


def variant(text):
    name, _, spec = text.partition("=")
    options = {"binary": BINARY, "policy": COMPONENTS / "pod_privileged.wasm", "args": []}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition(":")
        if key == "arg":
            options["args"].append(value)
        elif key in ("binary", "policy"):
            options[key] = Path(value).resolve()
        else:
            raise argparse.ArgumentTypeError(f"unknown key {key!r} in {item!r}: binary, policy or arg")
    return name, options


def run(options, directory, cache_dir, connections, seconds, script):
    policies = directory / f"policies-{abs(hash(str(options['policy'])))}.yml"
    policies.write_text(f"privileged-pods:\n  module: {options['policy']}\n")
    server = Server(2, policies=policies, cache_dir=cache_dir, extra_args=options["args"],
                    binary=options["binary"])
    try:
        assert server.post("privileged-pods", BODY.read_bytes())["response"]["allowed"] is False
        load.wrk(server, "privileged-pods", BODY, connections, 2, script)  # warm-up
        switches = server.context_switches()
        result = load.wrk(server, "privileged-pods", BODY, connections, seconds, script)
        return result, (server.context_switches() - switches) / max(result.requests, 1)
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", type=variant, action="append", default=[],
                        help="NAME=SPEC (repeatable); default: the current build alone")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    variants = args.variant or [variant("default=")]
    load.ensure_wrk()
    if not args.no_build:
        build()
    directory = Path(tempfile.mkdtemp(prefix="portcullis-cpu-"))
    cache_dir = scratch_dir()
    script = load.lua_script(directory)
    results = {name: [] for name, _ in variants}
    try:
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else list(reversed(variants))
            for name, options in order:
                result, switches = run(options, directory, cache_dir, args.connections, args.seconds, script)
                results[name].append((result, switches))
                print(f"round {round_ + 1} {name}: {result.rps:,.0f} req/s, "
                      f"{result.cpu_us_per_request:.1f} µs CPU/request, {switches:.2f} switches/request")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)

    print(f"\nMachine: {machine()}; pod-privileged, serve --workers 2; wrk on the same machine "
          f"(2 threads, {args.connections} connections); {args.rounds} interleaved rounds x {args.seconds} s, "
          f"medians.\n")
    print("| variant | server CPU (µs/request), every run | median | context switches / request | req/s |")
    print("|---|---|---:|---:|---:|")
    for name, runs in results.items():
        every = " · ".join(f"{r.cpu_us_per_request:.0f}" for r, _ in runs)
        print(f"| {name} | {every} | {statistics.median(r.cpu_us_per_request for r, _ in runs):.0f} "
              f"| {statistics.median(s for _, s in runs):.2f} | {statistics.median(r.rps for r, _ in runs):,.0f} |")


if __name__ == "__main__":
    main()
