#!/usr/bin/env python3
"""Start-up: time from process start to /readiness = 200 for the 13-policy
set, with an empty compiled cache and with a warm one; then the same set with
every module pulled from a local OCI registry (Debian's docker-registry on
127.0.0.1), with an empty download store and with a warm one. Prints a
Markdown table of medians.

    python3 bench/startup.py [--runs 5]
"""

import argparse
import http.client
import re
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path

from common import BINARY, COMPONENTS, POLICIES, build, machine, scratch_dir


def time_to_ready(cache_dir, extra=()):
    """Seconds from spawn to the first 200 from /readiness."""
    # No --policies: the embedded default is the 13-policy set.
    args = [str(BINARY), "serve", "--addr", "127.0.0.1", "--port", "0", "--readiness-probe-port", "0",
            "--components-dir", str(COMPONENTS), "--log-fmt", "json",
            "--log-level", "warn,portcullis::server=info", "--cache-dir", str(cache_dir), *extra]
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


class LocalRegistry:
    """docker-registry on 127.0.0.1 holding the 13-policy set's components,
    pushed with `portcullis push`; `policies` is examples/policies.yml with
    every module a registry:// reference to them."""

    def __init__(self, work):
        if shutil.which("docker-registry") is None:
            raise SystemExit("docker-registry is missing: apt-get install docker-registry")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.host = f"127.0.0.1:{s.getsockname()[1]}"
        config = work / "registry.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {work / 'registry'}\nhttp:\n  addr: {self.host}\n")
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(tuple(self.host.rsplit(":", 1)), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit("docker-registry did not start")
                time.sleep(0.05)
        self.sources = work / "sources.yml"
        self.sources.write_text(f'insecure_sources: ["{self.host}"]\n')
        text = POLICIES.read_text()
        for name in sorted(set(re.findall(r"module:\s*([\w.-]+)\.wasm", text))):
            subprocess.run([str(BINARY), "push", "--sources-path", str(self.sources),
                            str(COMPONENTS / f"{name}.wasm"),
                            f"registry://{self.host}/policies/{name}:v1"],
                           check=True, stdout=subprocess.DEVNULL)
        self.policies = work / "policies.yml"
        self.policies.write_text(re.sub(r"(module:\s*)([\w.-]+)\.wasm",
                                        lambda m: f"{m.group(1)}registry://{self.host}/policies/{m.group(2)}:v1",
                                        text))

    def args(self, store):
        return ["--policies", str(self.policies), "--sources-path", str(self.sources),
                "--policies-download-dir", str(store)]

    def stop(self):
        self.process.terminate()
        self.process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build()
    work = Path(scratch_dir())
    registry = LocalRegistry(work)
    rows = {name: [] for name in ROWS}
    try:
        for run in range(args.runs):
            cache_dir = scratch_dir()
            rows[ROWS[0]].append(time_to_ready(cache_dir))
            rows[ROWS[1]].append(time_to_ready(cache_dir))
            shutil.rmtree(cache_dir, ignore_errors=True)
            # Every module pulled, every component compiled: a first start.
            cache_dir, store = scratch_dir(), work / f"store-{run}"
            rows[ROWS[2]].append(time_to_ready(cache_dir, registry.args(store)))
            shutil.rmtree(store, ignore_errors=True)
            # Compiled cache warm, store empty: what pulling adds.
            rows[ROWS[3]].append(time_to_ready(cache_dir, registry.args(store)))
            # Both warm: a restart (tags other than latest are not looked up).
            rows[ROWS[4]].append(time_to_ready(cache_dir, registry.args(store)))
            shutil.rmtree(cache_dir, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"Machine: {machine()}; 13 policies / 5 unique components; {args.runs} runs, medians.\n")
    print("| modules | compiled cache | download store | time to /readiness = 200 (ms) | min | max |")
    print("|---|---|---|---:|---:|---:|")
    for name, values in rows.items():
        ms = [v * 1000 for v in values]
        print(f"| {name} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |")


ROWS = (
    "files | empty (compile everything) | —",
    "files | warm | —",
    "registry | empty | empty (pull everything)",
    "registry | warm | empty (pull everything)",
    "registry | warm | warm",
)


if __name__ == "__main__":
    main()
