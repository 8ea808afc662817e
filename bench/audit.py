#!/usr/bin/env python3
"""Background audit throughput: objects per second, against a real kube-apiserver.

Starts etcd and kube-apiserver (the end-to-end suite's build, from
tests/e2e-kubernetes/obtain-kubernetes, cached) on 127.0.0.1, installs the
Policy Reports CRDs (deploy/crds/policyreports.yaml), creates N pods in 10
namespaces (one in ten privileged), and runs `portcullis audit` (release
build) with three policies that cover pods: the pod-privileged component,
the trusted-images component in monitor mode and Kubewarden's pod-privileged
module. Each round runs the audit twice: printing only (--no-reports) and
writing the reports. Prints objects/s (median of the rounds) as a Markdown
table for BENCHMARKS.md.

    python3 bench/audit.py [--pods 5000] [--rounds 3] [--page-size 100] [--no-build]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
import ssl

from common import BINARY, COMPONENTS, ROOT, build, free_port, machine, stop_process

NAMESPACES = 10

POLICIES = f"""
privileged-pods:
  module: {COMPONENTS / 'pod_privileged.wasm'}
trusted-images:
  module: {COMPONENTS / 'trusted_images.wasm'}
  policyMode: monitor
  settings:
    allowedRegistries: ["docker.io"]
kw-privileged:
  module: {COMPONENTS / 'kw_pod_privileged.wasm'}
"""


def wait_until(what, check, seconds, process):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} not ready after {seconds} s")


class Cluster:
    """etcd + kube-apiserver on 127.0.0.1, a static admin token, a kubeconfig."""

    def __init__(self, work):
        bin_dir = subprocess.run([ROOT / "tests" / "e2e-kubernetes" / "obtain-kubernetes"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        self.kubectl_bin = os.path.join(bin_dir, "kubectl")
        self.work = work
        self.processes = []
        etcd_port, peer_port, self.api_port = free_port(), free_port(), free_port()
        self.processes.append(subprocess.Popen(
            ["etcd", "--name", "bench", "--data-dir", f"{work}/etcd",
             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-cluster", f"bench=http://127.0.0.1:{peer_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        pki = f"{work}/pki"
        os.makedirs(pki)
        openssl = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-days", "1", "-keyout", f"{pki}/ca.key", "-out", f"{pki}/ca.crt", "-subj", "/CN=bench-ca")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{pki}/api.key", "-out", f"{pki}/api.csr", "-subj", "/CN=kube-apiserver")
        with open(f"{pki}/api.ext", "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", f"{pki}/api.csr", "-CA", f"{pki}/ca.crt", "-CAkey", f"{pki}/ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", f"{pki}/api.ext", "-out", f"{pki}/api.crt")
        openssl("genrsa", "-out", f"{pki}/sa.key", "2048")
        openssl("rsa", "-in", f"{pki}/sa.key", "-pubout", "-out", f"{pki}/sa.pub")
        token = os.urandom(16).hex()
        with open(f"{pki}/tokens.csv", "w") as f:
            f.write(f'{token},bench-admin,bench-admin,"system:masters"\n')
        self.processes.append(subprocess.Popen(
            [os.path.join(bin_dir, "kube-apiserver"),
             f"--etcd-servers=http://127.0.0.1:{etcd_port}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             f"--secure-port={self.api_port}", "--insecure-port=0",
             f"--tls-cert-file={pki}/api.crt", f"--tls-private-key-file={pki}/api.key",
             f"--token-auth-file={pki}/tokens.csv", "--authorization-mode=RBAC",
             f"--service-account-key-file={pki}/sa.pub",
             f"--service-account-signing-key-file={pki}/sa.key",
             "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
             "--service-cluster-ip-range=10.96.0.0/24", "--endpoint-reconciler-type=none",
             "--disable-admission-plugins=ServiceAccount", "--allow-privileged=true",
             "--profiling=false", f"--cert-dir={pki}/generated"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        context = ssl.create_default_context(cafile=f"{pki}/ca.crt")
        request = urllib.request.Request(f"https://127.0.0.1:{self.api_port}/readyz",
                                         headers={"Authorization": f"Bearer {token}"})
        wait_until("kube-apiserver", lambda: urllib.request.urlopen(request, context=context).status == 200,
                   120, self.processes[-1])
        self.kubeconfig = f"{work}/kubeconfig"
        open(self.kubeconfig, "w").close()
        self.kubectl("config", "set-cluster", "bench", f"--server=https://127.0.0.1:{self.api_port}",
                     f"--certificate-authority={pki}/ca.crt", "--embed-certs")
        self.kubectl("config", "set-credentials", "admin", f"--token={token}")
        self.kubectl("config", "set-context", "bench", "--cluster=bench", "--user=admin")
        self.kubectl("config", "use-context", "bench")
        wait_until("default namespace", lambda: self.kubectl("get", "namespace", "default") or True,
                   60, self.processes[-1])

    def kubectl(self, *args, stdin=None):
        return subprocess.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args], input=stdin,
                              check=True, capture_output=True, text=True).stdout

    def stop(self):
        for process in reversed(self.processes):
            stop_process(process, timeout=10)


def pods(count):
    """`count` pods over NAMESPACES namespaces as Lists of at most 500."""
    items = []
    for i in range(count):
        items.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"pod-{i}", "namespace": f"bench-{i % NAMESPACES}"},
            "spec": {"containers": [{
                "name": "main", "image": "docker.io/library/busybox:1.36",
                "securityContext": {"privileged": i % 10 == 0}}]},
        })
    for start in range(0, count, 500):
        yield json.dumps({"apiVersion": "v1", "kind": "List", "items": items[start:start + 500]})


def audit(cluster, policies, cache, page_size, reports):
    args = [BINARY, "audit", "--policies", policies, "--kubeconfig", cluster.kubeconfig,
            "--cache-dir", cache, "--output", "json", "--page-size", str(page_size)]
    if not reports:
        args.append("--no-reports")
    started = time.monotonic()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    summary = json.loads(out)["summary"]
    summary["wall"] = time.monotonic() - started
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        build()
    work = tempfile.mkdtemp(prefix="portcullis-bench-audit-")
    cluster = None
    try:
        cluster = Cluster(work)
        cluster.kubectl("apply", "-f", str(ROOT / "deploy" / "crds" / "policyreports.yaml"))
        for n in range(NAMESPACES):
            cluster.kubectl("create", "namespace", f"bench-{n}")
        started = time.monotonic()
        for chunk in pods(args.pods):
            cluster.kubectl("create", "-f", "-", stdin=chunk)
        print(f"created {args.pods} pods in {time.monotonic() - started:.0f} s", flush=True)
        policies = f"{work}/policies.yml"
        with open(policies, "w") as f:
            f.write(POLICIES)
        cache = f"{work}/cache"
        audit(cluster, policies, cache, args.page_size, False)  # compiles once, warms the cache
        rows = {False: [], True: []}
        for round_ in range(args.rounds):
            for reports in (False, True):
                summary = audit(cluster, policies, cache, args.page_size, reports)
                assert summary["objects"] == args.pods, summary
                rows[reports].append(summary)
                print(f"round {round_ + 1}, reports {'on ' if reports else 'off'}: "
                      f"{summary['objectsPerSecond']:.0f} objects/s "
                      f"({summary['evaluations']} evaluations in {summary['seconds']:.2f} s; "
                      f"the command took {summary['wall']:.2f} s)", flush=True)
        print()
        print(f"{args.pods} pods in {NAMESPACES} namespaces, 3 policies, page size {args.page_size}; "
              f"{machine()}; {time.strftime('%Y-%m-%d')}; `python3 bench/audit.py --pods {args.pods}`")
        print()
        print("| run | scan: objects/s | scan: evaluations/s | whole command: s | whole command: objects/s |")
        print("|---|---:|---:|---:|---:|")
        for reports, label in ((False, "`--no-reports`"), (True, "writing the reports")):
            ops = statistics.median(r["objectsPerSecond"] for r in rows[reports])
            seconds = statistics.median(r["seconds"] for r in rows[reports])
            wall = statistics.median(r["wall"] for r in rows[reports])
            evaluations = rows[reports][0]["evaluations"]
            print(f"| {label} | {ops:,.0f} | {evaluations / seconds:,.0f} | {wall:.2f} | {args.pods / wall:,.0f} |")
        print()
        print("Scan: listing and evaluating, as the audit's summary times it. Whole command: from start to exit "
              "(loading the policies from the compiled cache, discovery, the scan, writing the reports).")
    finally:
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
