"""Shared by the benchmarks: build, start `portcullis serve`, talk to it, read its memory.

Every server binds to 127.0.0.1 only, and every loop here is bounded.
"""

import json
import re
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "portcullis"
COMPONENTS = ROOT / "target" / "wasm32-wasip2" / "policy"
REQUESTS = ROOT / "bench" / "requests"
POLICIES = ROOT / "examples" / "policies.yml"
KUBEWARDEN_POLICIES = ROOT / "bench" / "kubewarden-policies.yml"


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process, timeout=30):
    """SIGTERM, then SIGKILL if `process` is still there after `timeout` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def absolute_modules(text):
    """policies.yml `text` with its relative modules made absolute (they
    name components of the build)."""
    return re.sub(r"(module:\s*)([\w.-]+\.wasm)", lambda m: f"{m.group(1)}{COMPONENTS / m.group(2)}", text)


def write_policies(text):
    """Writes policies.yml `text` to a temporary file, its relative modules
    made absolute; returns the path."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(absolute_modules(text))
    return f.name

# Which request exercises which policy of examples/policies.yml.
REQUEST_FOR = {
    "privileged-pods": "privileged-pod",
    "privileged-pods-2": "privileged-pod",
    "privileged-pods-3": "privileged-pod",
    "privileged-pods-4": "privileged-pod",
    "privileged-pods-monitor": "privileged-pod",
    "sleep": "short-nap-pod",
    "disallow-service-loadbalancer": "loadbalancer-service",
    "trusted-images-docker-hub": "untrusted-image-pod",
    "trusted-images-internal": "untrusted-image-pod",
    "trusted-images-pinned": "untrusted-image-pod",
    "trusted-images-monitor": "untrusted-image-pod",
    "deny-labels": "labelled-pod",
    "deny-labels-monitor": "labelled-pod",
}

# Which request exercises which policy of bench/kubewarden-policies.yml.
KUBEWARDEN_REQUEST_FOR = {
    "privileged-pods": "privileged-pod",
    "privileged-pods-2": "privileged-pod",
    "privileged-pods-3": "privileged-pod",
    "privileged-pods-4": "privileged-pod",
    "privileged-pods-monitor": "privileged-pod",
    "sleep": "short-nap-pod",
    "annotate": "labelled-pod",
    "required-team": "labelled-pod",
    "required-owner": "labelled-pod",
    "required-both": "labelled-pod",
    "required-monitor": "labelled-pod",
    "deny-labels": "labelled-pod",
    "deny-labels-monitor": "labelled-pod",
}


def build():
    """Builds the components and the release host, like scripts/demo does."""
    subprocess.run([ROOT / "scripts" / "build-components"], check=True)
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "portcullis"], cwd=ROOT, check=True)


def request_body(name):
    return (REQUESTS / f"{name}.json").read_bytes()


def _serving_addresses(line):
    """(API, probes) addresses from the "serving" log line, JSON or text;
    (None, None) from any other line."""
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        match = re.search(r" serving api_addr=(\S+) readiness_addr=(\S+)", line)
        return match.groups() if match else (None, None)
    if fields.get("message") == "serving":
        return fields["api_addr"], fields["readiness_addr"]
    return None, None


def process_cpu_seconds(pid):
    """User + system CPU time of process `pid` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_status_kib(pid):
    """The sizes in /proc/PID/status (VmRSS, VmHWM, RssAnon, ...), in KiB."""
    sizes = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith(" kB"):
            sizes[key] = int(value.split()[0])
    return sizes


class Server:
    """A `portcullis serve` process on ephemeral loopback ports."""

    def __init__(self, workers, policies=None, cache_dir=None, extra_args=(), log_fmt="json",
                 log_level="warn,portcullis::server=info", preexec_fn=None, keep_logs=False, binary=BINARY):
        """`policies`: a policies.yml path; None serves the embedded default
        (examples/policies.yml, the 13-policy set) from the build's components.
        `log_level` None leaves the server's default; `preexec_fn` runs in the
        child before exec (e.g. to set its rlimits); `keep_logs` keeps the log
        lines after "serving" in `self.logs`; `binary` another build of
        portcullis to compare with."""
        args = [
            str(binary), "serve",
            "--addr", "127.0.0.1", "--port", "0", "--readiness-probe-port", "0",
            "--workers", str(workers),
            "--components-dir", str(COMPONENTS),
            "--log-fmt", log_fmt,
        ]
        if log_level is not None:
            args += ["--log-level", log_level]
        if policies is not None:
            args += ["--policies", str(policies)]
        args += ["--cache-dir", str(cache_dir)] if cache_dir else ["--no-cache"]
        args += list(extra_args)
        self.started = time.perf_counter()
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        self.api = self.probes = None
        self.logs = []
        deadline = time.monotonic() + 300
        for line in self.process.stderr:
            if time.monotonic() > deadline:
                break
            self.api, self.probes = _serving_addresses(line)
            if self.api is not None:
                break
        if self.api is None:
            self.stop()
            sys.exit("portcullis serve did not start")
        # Drain stderr so the server never blocks on a full pipe.
        keep = self.logs.append if keep_logs else (lambda line: None)
        threading.Thread(target=lambda: [keep(line) for line in self.process.stderr], daemon=True).start()

    def post(self, policy, body):
        request = urllib.request.Request(f"http://{self.api}/validate/{policy}", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    @property
    def base_url(self):
        return f"http://{self.api}"

    def cpu_seconds(self):
        """User + system CPU time of the process (all its threads) so far."""
        return process_cpu_seconds(self.process.pid)

    def context_switches(self):
        """Voluntary + involuntary context switches of all the process's threads so far."""
        total = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
            except FileNotFoundError:  # a thread that just ended
                pass
        return total

    def memory_kib(self):
        """(VmRSS, VmHWM) of the server process, in KiB."""
        status = process_status_kib(self.process.pid)
        return status["VmRSS"], status["VmHWM"]

    def stop(self):
        stop_process(self.process)


def warm_up(server, workers, policies=REQUEST_FOR, rounds=3):
    """Reaches every policy on every worker: `workers` concurrent requests per
    policy, a few rounds."""
    for _ in range(rounds):
        for policy, request in policies.items():
            body = request_body(request)
            threads = [threading.Thread(target=server.post, args=(policy, body)) for _ in range(workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {cpu}"


def scratch_dir():
    return tempfile.mkdtemp(prefix="portcullis-bench-")
