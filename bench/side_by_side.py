"""Two policy servers on one machine for bench/compare_kubewarden.py: a
Kubewarden policy-server and `portcullis serve`, started the same way
(loopback ports chosen here, the same policies.yml, the same TLS material),
timed to readiness the same way and read the same way (/proc: CPU time, RSS).

Everything binds to 127.0.0.1; every wait has a deadline.
"""

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

from common import (BINARY, COMPONENTS, KUBEWARDEN_POLICIES, free_port, process_cpu_seconds,
                    process_status_kib, stop_process)

# How long a server may take to become ready: Kubewarden compiles every
# module at every start, Portcullis on an empty cache.
READY_DEADLINE_S = 300
NETNS_MARKER = "PORTCULLIS_BENCH_NETNS"


# --- the network namespace --------------------------------------------------------------------

def in_namespace():
    """The namespace this process was re-executed in, or None."""
    return os.environ.get(NETNS_MARKER)


def rerun_in_namespace(argv):
    """Runs this script again inside a fresh network namespace with only
    loopback up, and deletes the namespace afterwards; returns its exit code.

    Kubewarden's policy-server downloads sigstore trust data at start: with no
    route out it fails at once and goes on, instead of waiting on the network
    (and it sends nothing anywhere). Both servers and the load generators run
    inside, so they share one network stack."""
    name = f"portcullis-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        child = subprocess.run(["ip", "netns", "exec", name, sys.executable, *argv],
                               env={**os.environ, NETNS_MARKER: name})
        return child.returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def can_make_namespace():
    return os.geteuid() == 0 and shutil.which("ip") is not None


# --- what the servers serve -------------------------------------------------------------------

def policies_yml(text, path):
    """Writes policies.yml `text` to `path`, every `module: NAME.wasm` made a
    `file://` URL of the build's module: both servers read the same file."""
    lines = []
    for line in text.splitlines():
        key, sep, value = line.partition("module:")
        if sep and value.strip().endswith(".wasm") and "://" not in value:
            line = f"{key}module: file://{COMPONENTS / value.strip()}"
        lines.append(line)
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def kubewarden_set(path):
    """The 13-policy set of Kubewarden-protocol modules (bench/kubewarden-policies.yml)."""
    return policies_yml(KUBEWARDEN_POLICIES.read_text(), path)


def make_tls(directory):
    """A CA and a server certificate for 127.0.0.1 (P-256), made with openssl;
    returns (ca, cert, key) paths."""
    d = Path(directory)
    ca, ca_key, cert, key = d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key"
    ext = d / "server.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=compare bench CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", d / "server.csr", "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", d / "server.csr", "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "1", "-extfile", ext)
    return str(ca), str(cert), str(key)


# --- the servers ------------------------------------------------------------------------------

class PolicyServer:
    """A policy server process on loopback ports of its own.

    Both kinds are started by `start()` and are ready when their probe port
    answers `GET /readiness` with 200, polled every millisecond over one
    kept-alive connection (a connection per poll would take CPU from the
    server being timed); `ready_s` is the time from spawn to that answer."""

    def __init__(self, name, args, api_port, probe_port, log_path, tls_ca=None):
        self.name, self.api_port, self.probe_port, self.tls_ca = name, api_port, probe_port, tls_ca
        self.log = open(log_path, "ab")
        started = time.perf_counter()
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        try:
            self._wait_ready(log_path)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - started

    def _wait_ready(self, log_path):
        connection = None
        deadline = time.monotonic() + READY_DEADLINE_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = Path(log_path).read_text(errors="replace")[-3000:]
                sys.exit(f"{self.name} exited with {self.process.returncode} before it was ready:\n{tail}")
            try:
                connection = connection or http.client.HTTPConnection("127.0.0.1", self.probe_port, timeout=5)
                connection.request("GET", "/readiness")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    connection.close()
                    return
            except (OSError, http.client.HTTPException):
                connection = None
            time.sleep(0.001)
        sys.exit(f"{self.name} was not ready within {READY_DEADLINE_S} s (log: {log_path})")

    @property
    def base_url(self):
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.api_port}"

    def post(self, policy, body):
        """POSTs an AdmissionReview to /validate/{policy}; returns the parsed answer."""
        if self.tls_ca:
            context = ssl.create_default_context(cafile=self.tls_ca)
            connection = http.client.HTTPSConnection("127.0.0.1", self.api_port, timeout=30, context=context)
        else:
            connection = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=30)
        try:
            connection.request("POST", f"/validate/{policy}", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"{self.name} /validate/{policy}: {response.status} {data[:300]!r}")
            return json.loads(data)
        finally:
            connection.close()

    def cpu_seconds(self):
        """User + system CPU time of the process (all its threads) so far."""
        return process_cpu_seconds(self.process.pid)

    def memory_kib(self):
        """{"VmRSS", "RssAnon", "RssFile", "RssShmem", ...}: resident memory
        in KiB, the whole and its parts (anonymous, file-backed such as the
        executable's own pages, shared)."""
        return process_status_kib(self.process.pid)

    def stop(self):
        stop_process(self.process)
        self.log.close()


def start_kubewarden(binary, policies, workers, scratch, tag, tls=None, download_dir=None, sigstore_dir=None):
    """Kubewarden's policy-server. It keeps no compiled modules between starts:
    every start compiles every module. `download_dir`/`sigstore_dir` default to
    fresh directories (nothing is downloaded from `file://` modules; sigstore's
    download fails at once without a route)."""
    api, probe = free_port(), free_port()
    download_dir = download_dir or Path(scratch) / f"kw-store-{tag}"
    sigstore_dir = sigstore_dir or Path(scratch) / f"kw-sigstore-{tag}"
    args = [str(binary), "--addr", "127.0.0.1", "--port", str(api), "--readiness-probe-port", str(probe),
            "--policies", str(policies), "--policies-download-dir", str(download_dir),
            "--sigstore-cache-dir", str(sigstore_dir), "--workers", str(workers),
            "--ignore-kubernetes-connection-failure", "--log-level", "warn", "--log-no-color"]
    if tls:
        args += ["--cert-file", tls[1], "--key-file", tls[2]]
    return PolicyServer("kubewarden", args, api, probe, Path(scratch) / f"kubewarden-{tag}.log",
                        tls[0] if tls else None)


def start_portcullis(policies, workers, scratch, tag, cache_dir, tls=None, extra_args=()):
    """`portcullis serve` (the release build) with its compiled cache in `cache_dir`."""
    api, probe = free_port(), free_port()
    args = [str(BINARY), "serve", "--addr", "127.0.0.1", "--port", str(api), "--readiness-probe-port", str(probe),
            "--policies", str(policies), "--workers", str(workers), "--cache-dir", str(cache_dir),
            "--log-level", "warn", "--log-fmt", "json", *extra_args]
    if tls:
        args += ["--cert-file", tls[1], "--key-file", tls[2]]
    return PolicyServer("portcullis", args, api, probe, Path(scratch) / f"portcullis-{tag}.log",
                        tls[0] if tls else None)


def kubewarden_version(binary):
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return ((out.stdout or out.stderr).strip() or "?").splitlines()[0]
