#!/usr/bin/env python3
"""Hostile policies, recorded: for each attack of tests/policies/hostile, how
long the request took against its deadline, what the answer said, how fast a
normal policy answered meanwhile, and the server's RSS before and after.

    python3 bench/hostile.py
"""

import argparse
import json
import statistics
import threading
import time
import urllib.request

from common import REQUESTS, Server, build, machine, scratch_dir, write_policies

TIMEOUT_S = 1
ATTACKS = ["loop", "sleep", "grow", "recurse", "panic", "unreachable", "huge-response",
           "huge-mutation", "spam-stdout", "spam-stderr", "open-file", "read-env", "open-socket"]


def policies():
    lines = ["privileged: { module: pod_privileged.wasm }"]
    for attack in ATTACKS:
        # 16 MB: over the 8 MiB response limit, within the guest's 256 MiB
        # (building a huge mutated object takes about 4x its size).
        extra, size = (", allowedToMutate: true", ", bytes: 16000000") if attack == "huge-mutation" else ("", "")
        lines.append(f"{attack}: {{ module: hostile_policy.wasm, timeoutEvalSeconds: {TIMEOUT_S}{extra}, "
                     f"settings: {{ attack: {attack}{size} }} }}")
    return "\n".join(lines) + "\n"


def post(server, policy, body):
    request = urllib.request.Request(f"http://{server.api}/validate/{policy}", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)["response"]
    return answer, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build()
    body = (REQUESTS / "privileged-pod.json").read_bytes()
    server = Server(2, policies=write_policies(policies()), cache_dir=scratch_dir())
    for _ in range(300):
        post(server, "privileged", body)
    baseline = server.memory_kib()[0] / 1024
    rows = []
    for attack in ATTACKS:
        normal, stop = [], threading.Event()

        def background():
            while not stop.is_set():
                normal.append(post(server, "privileged", body)[1])

        thread = threading.Thread(target=background)
        thread.start()
        answer, elapsed = post(server, attack, body)
        stop.set()
        thread.join()
        status = answer.get("status", {})
        message = status.get("message", "")
        rows.append((attack, elapsed, answer["allowed"], status.get("code", "-"), message[:110],
                     statistics.median(normal) * 1000 if normal else float("nan"),
                     max(normal) * 1000 if normal else float("nan"),
                     server.memory_kib()[0] / 1024))
    for _ in range(300):
        post(server, "privileged", body)
    after = server.memory_kib()[0] / 1024
    server.stop()

    print(f"Machine: {machine()}; server --workers 2; deadline {TIMEOUT_S} s per attack; "
          "a normal policy (pod-privileged) queried in a loop during each attack.\n")
    print("| attack | answered in (ms) | allowed | code | message | normal p50 / max during (ms) | RSS after (MiB) |")
    print("|---|---:|---|---|---|---:|---:|")
    for attack, elapsed, allowed, code, message, p50, worst, rss in rows:
        print(f"| {attack} | {elapsed * 1000:.0f} | {str(allowed).lower()} | {code} | {message} "
              f"| {p50:.1f} / {worst:.1f} | {rss:.1f} |")
    print(f"\nRSS after warm-up: {baseline:.1f} MiB; after all attacks and 300 normal requests: {after:.1f} MiB "
          f"({100 * (after - baseline) / baseline:+.1f} %)")


if __name__ == "__main__":
    main()
