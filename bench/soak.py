#!/usr/bin/env python3
"""Soak: a bounded number of requests (default 1,000,000) of a mixed load —
normal policies, traps, out-of-memory and timeouts — against one
`portcullis serve` on 127.0.0.1, sampling its RSS. Every request is counted:
sent must equal answered. Prints the figures as Markdown.

    python3 bench/soak.py [--requests 1000000] [--connections 8]
"""

import argparse
import http.client
import json
import os
import statistics
import threading
import time

from common import REQUESTS, Server, build, machine, scratch_dir, write_policies

POLICIES = """
privileged: { module: pod_privileged.wasm }
trusted: { module: trusted_images.wasm, settings: { allowedRegistries: [docker.io] } }
annotations:
  module: required_annotations.wasm
  allowedToMutate: true
  settings: { requiredAnnotations: { team: platform } }
hostile-none: { module: hostile_policy.wasm, settings: { attack: none } }
hostile-panic: { module: hostile_policy.wasm, settings: { attack: panic } }
hostile-grow: { module: hostile_policy.wasm, memoryLimitBytes: 33554432, settings: { attack: grow } }
hostile-loop: { module: hostile_policy.wasm, timeoutEvalSeconds: 1, settings: { attack: loop } }
"""

# One cycle of 10,000 requests: (policy, request, count, expected "allowed").
CYCLE = [
    ("privileged", "privileged-pod", 5000, False),
    ("trusted", "untrusted-image-pod", 2500, False),
    ("annotations", "privileged-pod", 1500, True),
    ("hostile-none", "privileged-pod", 880, True),
    ("hostile-panic", "privileged-pod", 100, False),
    ("hostile-grow", "privileged-pod", 19, False),
    ("hostile-loop", "privileged-pod", 1, False),
]
CYCLE_LENGTH = sum(c[2] for c in CYCLE)


def schedule():
    """The policy of each position in a cycle, interleaved (not in blocks)."""
    slots = []
    for policy, request, count, allowed in CYCLE:
        slots += [(i * CYCLE_LENGTH / count, policy, request, allowed) for i in range(count)]
    return [s[1:] for s in sorted(slots)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build()
    order = schedule()
    bodies = {name: (REQUESTS / f"{name}.json").read_bytes() for _, name, _, _ in CYCLE}
    policies = write_policies(POLICIES)
    cache_dir = scratch_dir()
    server = Server(args.workers, policies=policies, cache_dir=cache_dir)
    host, port = server.api.rsplit(":", 1)

    lock = threading.Lock()
    counts = {"sent": 0, "answered": 0, "wrong": 0, "http_errors": 0, "transport_errors": 0}
    outcomes = {}
    next_index = [0]
    samples = []  # (requests answered, RSS MiB)

    def take():
        with lock:
            i = next_index[0]
            if i >= args.requests:
                return None
            next_index[0] += 1
            counts["sent"] += 1
            return i

    def client():
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        while (i := take()) is not None:
            policy, request, allowed = order[i % CYCLE_LENGTH]
            try:
                connection.request("POST", f"/validate/{policy}", bodies[request],
                                   {"Content-Type": "application/json"})
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                with lock:
                    counts["transport_errors"] += 1
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                continue
            with lock:
                counts["answered"] += 1
                if response.status != 200:
                    counts["http_errors"] += 1
                    continue
                answer = json.loads(body)["response"]
                counts["wrong"] += answer["allowed"] != allowed
                code = answer.get("status", {}).get("code", "-")
                outcomes[(policy, code)] = outcomes.get((policy, code), 0) + 1

    def sampler():
        while not done.is_set():
            with lock:
                answered = counts["answered"]
            samples.append((answered, server.memory_kib()[0] / 1024))
            done.wait(2.0)

    done = threading.Event()
    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.connections)]
    watcher = threading.Thread(target=sampler)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    elapsed = time.monotonic() - started
    final_rss, peak = server.memory_kib()
    server.stop()
    os.unlink(policies)

    # RSS moves with what is in flight (a `hostile-grow` evaluation holds up
    # to 32 MiB until it fails), so drift compares medians of windows, not
    # two single samples: the 10 % of the run after warm-up vs the last 10 %.
    def window(low, high):
        values = [rss for answered, rss in samples if low <= answered < high]
        return statistics.median(values) if values else float("nan")

    warm = [rss for answered, rss in samples if answered >= args.requests // 10]
    first = window(args.requests // 10, args.requests // 5)
    last = window(args.requests * 9 // 10, args.requests + 1)
    print(f"Machine: {machine()}; server --workers {args.workers}; {args.connections} keep-alive "
          f"connections from one Python client on the same machine.\n")
    print("| figure | value |")
    print("|---|---:|")
    print(f"| requests sent | {counts['sent']:,} |")
    print(f"| requests answered | {counts['answered']:,} |")
    print(f"| lost (sent − answered) | {counts['sent'] - counts['answered']:,} |")
    print(f"| transport errors | {counts['transport_errors']:,} |")
    print(f"| non-200 answers | {counts['http_errors']:,} |")
    print(f"| verdicts not as expected | {counts['wrong']:,} |")
    print(f"| duration | {elapsed:,.0f} s ({counts['answered'] / elapsed:,.0f} req/s) |")
    print(f"| RSS after warm-up (median over requests 10-20 %) | {first:.1f} MiB |")
    print(f"| RSS at the end (median over the last 10 %) | {last:.1f} MiB |")
    print(f"| drift after warm-up | {100 * (last - first) / first:+.2f} % |")
    print(f"| RSS idle after the run | {final_rss / 1024:.1f} MiB |")
    print(f"| RSS min / median / max after warm-up | {min(warm):.1f} / {statistics.median(warm):.1f} / "
          f"{max(warm):.1f} MiB |")
    print(f"| peak VmHWM | {peak / 1024:.1f} MiB |")
    print("\n| policy | status code | answers |")
    print("|---|---|---:|")
    for (policy, code), n in sorted(outcomes.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"| {policy} | {code} | {n:,} |")
    lost = counts["sent"] - counts["answered"]
    raise SystemExit(1 if lost or counts["wrong"] or counts["http_errors"] else 0)


if __name__ == "__main__":
    main()
