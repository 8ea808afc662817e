#!/usr/bin/env python3
"""The network edge attacked at the red teams' full scale (issues 11 and 20),
and hostile registries (issue 20, findings 4 and 5).

Runs every attack of issue 11's table, and issue 20's second pass (rows 16
on), against a release `portcullis serve`
(a fresh server per attack, the shipped defaults, `--workers 2`), each from
this process on 127.0.0.1 with asyncio sockets, and measures what the
attack did to the server: its RSS (at rest, peak, and 5 s after the
attacker left), what the attacker's connections were answered and when the
server closed them. Meanwhile a separate process sends a normal review
(examples/pod-privileged/test_data/privileged_pod_review.json to a
pod-privileged policy) on a fresh connection every 250 ms, and GETs
/livez and /readiness on the probe port, and records their status, verdict
and latency (rows 10 and 16-19: also a keep-alive client connected before the
attack). Prints one Markdown table, the issues' "before" column beside the
measured "after". Row 20.3 (issue 20 (3), bench/slow_policies.py) also
prints a table of its own under it: another policy's latency while K = 1..8
slow policies, sleeping or spinning, each have a request in flight.

    python3 bench/abuse.py [--no-build] [--only 1,2,12,20.4a] [--binary PATH]

The hostile-registry rows (a second table) start the server with policies
from a stand-in registry (bench/hostile_registry.py) that drips a byte every
5 s or sends without end: at start-up they watch /readiness, the log and the
peak RSS (VmHWM) of a start-up that must fail; in a reload, the time until a
corrected configuration is applied and the stuck fetches are cancelled.

The script builds the components and the release host first (bench/common.py
`build()`) unless --no-build. It installs what it needs when missing: the
`h2` package from PyPI (HTTP/2 attacks) and h2load (Debian nghttp2-client,
the TLS + HTTP/2 row); TLS material is made with `openssl`. It takes about
nine and a half minutes (the slowest rows wait out the 10 s timeouts; row
20.3 about 75 s), and the hostile-registry rows three more (row 20.4a waits
out the 120 s fetch deadline); every attack is bounded in connections,
bytes and time.
"""

import argparse
import asyncio
import collections
import datetime
import importlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from attackers import (
    H2Client, NO_ANSWER, REVIEW_FILE, Watcher, attacker, client_tls, code, exchange, get, h2_outcome, last_closed, outcome, percentile, post, split_addr, still_open, summarize, verdict_ok,
)
from common import (
    BINARY, COMPONENTS, Server, absolute_modules, build, machine, process_status_kib, scratch_dir, stop_process,
    write_policies,
)
from hostile_registry import HostileRegistry
import slow_policies

WORKERS = 2
# The server's defaults this script expects (host/src/cli.rs), for the limits it reports.
HEADER_TIMEOUT_S = BODY_TIMEOUT_S = WEBHOOK_TIMEOUT_S = 10
# How long after an attack the server's RSS is read again.
SETTLE_S = 5
# How long issue 20's attacks (rows 16 on) last.
ATTACK_S = 25

POLICIES = """\
privileged: { module: pod_privileged.wasm }
privileged-monitor: { module: pod_privileged.wasm, policyMode: monitor }
sleepy:
  module: sleeping.wasm
  # Over the 2 s sleep, so that the sleep ends, not the evaluation deadline.
  timeoutEvalSeconds: 3
  settings: { sleepMilliseconds: 2000 }
"""

# Issue 11's "measured" column (rows 1-15: the server before the network
# edge was rewritten) and issue 20's (rows 16 on: before its second pass).
BEFORE = {
    1: "RSS 56 → 751 MiB in 0.7 s, held as long as the client likes (no body-read timeout)",
    2: "RSS 163 → 778 MiB in 3.6 s; 713 MiB still resident after the client left",
    3: "RSS 72 → 847 MiB; 764 MiB after close (no header-read timeout)",
    4: "RSS 58 → 451 MiB (mTLS does not cover the probe port)",
    5: "API, /livez and /readiness all time out, nothing logged",
    6: "0 of 500 closed",
    7: "peak RSS 1,297 MiB (1,742 MiB when they queue behind a slow policy)",
    8: "normal requests p50 1,062 ms",
    9: "126 fast 503s; another policy timed out for the whole burst (~128 s of waiting)",
    10: "the legitimate client got 503 on 38 % of its requests",
    11: "the process dies at once, 6 in-flight requests lost, nothing logged",
    12: "1,225 req/s, max request time 44 ms (~42 ms stalls; Kubewarden 1,359–1,451 req/s, max 5–10 ms)",
    13: "a forged log line and a raw escape byte in the log",
    14: "`100 Continue` instead of an immediate 413",
    15: "`400 text/plain`",
    16: "0 of 100 reviews on fresh connections answered over 25 s (61 reset, 39 closed); a keep-alive client "
        "opened before the attack evicted as idle, 6 of 112 answered; /livez and /readiness 200; RSS 44 MiB",
    17: "every normal review (3 KB) got `503 server overloaded: request bodies … already hold 67108864 bytes` "
        "until the body timeout, 12 of 12 tries; the attacker repeats",
    18: "VmHWM 1,333 MiB against the 64 MiB budget (4 connections: 924 MiB), held ~70 s, indefinitely by "
        "reconnecting",
    19: "each answer kept in the server until its client read it: 9 of 64 read the whole 7 MB answer 15 s later "
        "(the other 55 refused by the budget); peak RSS 111 MiB, the answers outside the budget (eba92f2)",
    "20.3": "two sleeping policies with one request each in flight: another policy's p50 0.9 → 1,952 ms; six "
            "hostile policies under load: 1,360 ms",
}


# --- what the script needs installed -----------------------------------------------------------

def ensure_h2():
    try:
        importlib.import_module("h2")
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "h2"], check=True)
        importlib.invalidate_caches()


def ensure_h2load():
    if not shutil.which("h2load"):
        subprocess.run(["apt-get", "install", "-y", "nghttp2-client"], check=True)


def raise_own_open_files():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_pki(directory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client
    certificate, made with openssl; returns their paths by name."""
    paths = {name: str(Path(directory) / name) for name in
             ["ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"]}

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", paths["ca.key"], "-out", paths["ca.crt"], "-days", "1", "-subj", "/CN=abuse bench CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for leaf, extensions in [("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                             ("client", "subjectAltName=DNS:kube-apiserver\nextendedKeyUsage=clientAuth")]:
        ext = Path(directory) / f"{leaf}.ext"
        ext.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}\n")
        csr = Path(directory) / f"{leaf}.csr"
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", paths[f"{leaf}.key"], "-out", str(csr), "-subj", f"/CN={leaf}")
        openssl("x509", "-req", "-in", str(csr), "-CA", paths["ca.crt"], "-CAkey", paths["ca.key"],
                "-CAcreateserial", "-out", paths[f"{leaf}.crt"], "-days", "1", "-extfile", str(ext))
    return paths


# --- the attacks ------------------------------------------------------------------------------

def large_review(size):
    """A privileged pod's review whose object carries `size` bytes of annotations."""
    review = json.loads(REVIEW_FILE.read_bytes())
    review["request"]["object"]["metadata"]["annotations"] = {
        f"example.com/a{i}": "x" * 980 for i in range(size // 1000)}
    return json.dumps(review, separators=(",", ":")).encode()


def many_keys(size):
    """A JSON object of `size` bytes, 16 bytes a key (`,"key00000001":0`)."""
    parts = ['{"uid":"raw"']
    length = len(parts[0])
    i = 0
    while length < size - 1:
        parts.append(f',"key{i:08d}":0')
        length += 16
        i += 1
    return ("".join(parts) + "}").encode(), i


def rss(server):
    return server.memory_kib()[0] / 1024


def metric(server, name):
    _, _, body, _ = exchange(server.probes, get("/metrics"))
    match = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.M)
    return float(match.group(1)) if match else 0.0


def counters(server):
    """The server's own count of what it refused and shed, non-zero only."""
    _, _, body, _ = exchange(server.probes, get("/metrics"))
    found = re.findall(r"^portcullis_(overload_rejections|shed_connections|shed_requests)_total\{([^}]*)\} (\S+)$",
                       body.decode(), re.M)
    return ", ".join(f"{name}{{{labels}}} {float(value):.0f}" for name, labels, value in found if float(value))


def unfinished_bodies(bench, server):
    declared, sent = 8_300_000, b" " * 8_000_000
    head = (f"POST /validate/privileged HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()

    async def attack():
        deadline = time.monotonic() + BODY_TIMEOUT_S + 15
        return await asyncio.gather(*(attacker(server.api, head, sent, deadline=deadline) for _ in range(90)))

    peers = asyncio.run(attack())
    closed = last_closed(peers, "head_sent")
    return (f"90 connections: {outcome(peers)}; the last closed by the server "
            + (f"{closed:.1f} s after its head" if closed is not None else "never")
            + (f"; **{still_open(peers)} still open at {BODY_TIMEOUT_S + 15} s**" if still_open(peers) else ""))


def unfinished_h2_streams(bench, server):
    async def attack():
        client = H2Client(server.api, 100)
        await client.connect()
        body, streams = b" " * 7_500_000, []
        for _ in range(100):
            stream = await client.open("/validate/privileged", body, 7_600_000, end=False)
            if stream is None:
                break
            streams.append(stream)
        deadline = time.monotonic() + BODY_TIMEOUT_S + 15
        while not all(s.done for s in streams) and time.monotonic() < deadline:
            client.changed.clear()
            try:
                await asyncio.wait_for(client.changed.wait(), timeout=max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        client.close()
        return client, streams

    started = time.monotonic()
    client, streams = asyncio.run(attack())
    spans = [s.finished - started for s in streams if s.finished]
    return (f"{len(streams)} streams (at most {client.conn.remote_settings.max_concurrent_streams} open at once, "
            f"the server's limit): {h2_outcome(streams)}; the last ended after "
            f"{max(spans, default=float('nan')):.1f} s")


def unfinished_heads(addr, connections, size, chunk=64 << 10):
    async def attack():
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 15
        tasks = []
        # One padding for all: 2,000 private copies of 400 KB would be 800 MB here.
        padding = memoryview((b"X-Padding: " + b"a" * 1000 + b"\r\n") * (size // 1013 + 1))
        for i in range(connections):
            head = f"POST /validate/privileged HTTP/1.1\r\nHost: x{i}\r\n".encode()
            tasks.append(attacker(addr, head, padding[:size - len(head)], deadline=deadline, chunk=chunk))
        return await asyncio.gather(*tasks)

    started = time.monotonic()
    peers = asyncio.run(attack())
    closed = [p.closed - started for p in peers if p.closed]
    return (f"{connections} connections: {outcome(peers)}; "
            + (f"all closed by {max(closed):.1f} s" if closed and not still_open(peers)
               else f"**{still_open(peers)} still open at {HEADER_TIMEOUT_S + 15} s**"))


def heads_on_api(bench, server):
    return unfinished_heads(server.api, 2000, 400_000)


def heads_on_probes(bench, server):
    return "on the probe port: " + unfinished_heads(server.probes, 2000, 400_000)


def idle_connections(bench, server):
    async def attack():
        # A connection that has not sent its first request is held to the
        # header timeout (not the longer idle timeout).
        # Connections beyond the listen backlog connect seconds later (SYN
        # retries): each is held for the timeout plus a margin from when it
        # connected.
        deadline, hold = time.monotonic() + HEADER_TIMEOUT_S + 60, HEADER_TIMEOUT_S + 15
        api = [attacker(server.api, b"", deadline=deadline, hold=hold) for _ in range(1100)]
        probes = [attacker(server.probes, b"", deadline=deadline, hold=hold) for _ in range(60)]
        peers = await asyncio.gather(*api, *probes)
        return peers[:1100], peers[1100:]

    started = time.monotonic()
    api, probes = asyncio.run(attack())
    time.sleep(0.5)  # the log line is written by another thread
    logged = collections.Counter(json.loads(line).get("fields", {}).get("listener") for line in server.logs
                                 if "connection limit reached" in line)

    def closed(peers):
        connected = [p.opened - started for p in peers if p.opened]
        spans = [p.closed - p.opened for p in peers if p.closed and p.opened]
        return (f"connected within {max(connected, default=0):.1f} s, " +
                (f"each closed at most {max(spans):.1f} s after it connected" if spans and not still_open(peers)
                 else f"**{still_open(peers)} still open {HEADER_TIMEOUT_S + 15} s after connecting**"))

    return (f"1,100 idle on the API: {outcome(api)}, {closed(api)}; 60 on the probe port: {outcome(probes)}, "
            f"{closed(probes)} (--request-header-timeout {HEADER_TIMEOUT_S} s); \"connection limit reached\" logged "
            f"{logged.get('API', 0)} × for the API, {logged.get('probes', 0)} × for the probes")


def slowloris(bench, server):
    trickle = b"POST /validate/privileged HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 60

    async def attack():
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 15
        return await asyncio.gather(*(attacker(server.api, b"", trickle, deadline=deadline, chunk=1, pause=1.0)
                                      for _ in range(500)))

    peers = asyncio.run(attack())
    lived = sorted(p.closed - p.opened for p in peers if p.closed and p.opened)
    closed = len(lived)
    return (f"{closed} of 500 closed by the server ({outcome(peers)}), after "
            f"{lived[0]:.1f}–{lived[-1]:.1f} s" if lived else f"0 of 500 closed ({outcome(peers)})")


def large_reviews(bench, server):
    review = large_review(7_300_000)
    rejected = 'portcullis_overload_rejections_total{reason="body_budget"}'
    parts = []
    for policy, label in [("privileged", "100 × 7.3 MB to pod-privileged"),
                          ("sleepy", "the same to the 2 s sleep policy (queued)")]:
        head = (f"POST /validate/{policy} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(review)}\r\nConnection: close\r\n\r\n").encode()
        before_refused = metric(server, rejected)
        bench.reset_peak(server)

        async def attack():
            deadline = time.monotonic() + WEBHOOK_TIMEOUT_S + 30
            return await asyncio.gather(*(attacker(server.api, head, review, deadline=deadline) for _ in range(100)))

        peers = asyncio.run(attack())
        peak = bench.peak(server)
        refused = metric(server, rejected) - before_refused
        parts.append(f"{label}: {outcome(peers)}; body_budget rejections {refused:.0f}; "
                     f"peak RSS {peak:.0f} MiB")
        time.sleep(2)
    return "; ".join(parts)


def raw_documents(bench, server):
    document, keys = many_keys(8_000_000)
    request = post("/validate_raw/privileged", document)

    async def client(until):
        statuses = collections.Counter()
        while time.monotonic() < until:
            peer = await attacker(server.api, b"", request, deadline=until + 30)
            statuses[peer.status or peer.error or "no answer"] += 1
        return statuses

    async def attack():
        until = time.monotonic() + 10
        return await asyncio.gather(*(client(until) for _ in range(4)))

    statuses = sum(asyncio.run(attack()), collections.Counter())
    return (f"4 clients × 10 s of {len(document) / 1e6:.1f} MB / {keys:,}-key documents: "
            + ", ".join(f"{n} × {s}" for s, n in statuses.most_common()))


def slow_policy_flood(bench, server):
    request = post("/validate/sleepy", REVIEW_FILE.read_bytes())

    async def one(deadline):
        started = time.monotonic()
        peer = await attacker(server.api, b"", request, deadline=deadline)
        return peer, (peer.closed or time.monotonic()) - started

    async def attack():
        deadline = time.monotonic() + WEBHOOK_TIMEOUT_S + 20
        return await asyncio.gather(*(one(deadline) for _ in range(256)))

    answers = asyncio.run(attack())
    fast = sum(1 for peer, took in answers if peer.status == 503 and took < 1)
    return (f"256 concurrent to the 2 s policy: {outcome([p for p, _ in answers])} ({fast} of the 503s within "
            f"1 s); the slowest answered after {max(t for _, t in answers):.1f} s "
            f"(--webhook-timeout {WEBHOOK_TIMEOUT_S} s)")


def multiplexing_client(bench, server):
    review = REVIEW_FILE.read_bytes()

    async def attack():
        client = H2Client(server.api, 200)
        await client.connect()
        streams, until = [], time.monotonic() + 10
        while time.monotonic() < until and len(streams) < 50_000:
            stream = await client.open("/validate/privileged", review, len(review))
            if stream is None:
                break
            streams.append(stream)
        deadline = time.monotonic() + 30
        while not all(s.done for s in streams) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        client.close()
        return client, streams

    client, streams = asyncio.run(attack())
    return (f"one HTTP/2 connection asking for 200 streams (the server allows "
            f"{client.conn.remote_settings.max_concurrent_streams}) for 10 s: {h2_outcome(streams)}")


def sighup(bench, server):
    request = post("/validate/sleepy", REVIEW_FILE.read_bytes())

    async def attack():
        deadline = time.monotonic() + 30
        flight = [asyncio.create_task(attacker(server.api, b"", request, deadline=deadline)) for _ in range(6)]
        await asyncio.sleep(0.3)
        os.kill(server.process.pid, signal.SIGHUP)
        return await asyncio.gather(*flight)

    peers = asyncio.run(attack())
    alive = server.process.poll() is None
    status, _, body, _ = exchange(server.api, post("/validate/privileged", REVIEW_FILE.read_bytes()))
    time.sleep(0.3)
    logged = any("SIGHUP" in line for line in server.logs)
    return (f"6 in flight: {outcome(peers)}; process {'alive' if alive else '**dead**'}, "
            f"a review afterwards: {status}{' + deny' if verdict_ok(status, body) else ''}; "
            f"SIGHUP {'logged' if logged else '**not logged**'}")


def tls_h2_sequential(bench, server):
    body = Path(bench.scratch) / "review.json"
    body.write_bytes(REVIEW_FILE.read_bytes())
    url = f"https://{server.api}/validate/privileged"
    runs = []
    for run in range(4):  # the first warms the pools up, not counted
        log = Path(bench.scratch) / f"h2load-{run}.log"
        out = subprocess.run(["h2load", "-n", "2000", "-c", "1", "-m", "1", "-d", str(body),
                              "-H", "content-type: application/json", f"--log-file={log}", url],
                             capture_output=True, text=True, timeout=300, check=True).stdout
        if run == 0:
            protocol = re.search(r"TLS Protocol: (\S+)", out)
            application = re.search(r"Application protocol: (\S+)", out)
            continue
        if "2000 succeeded" not in out or "2000 2xx" not in out:
            sys.exit(f"h2load: not every request succeeded:\n{out}")
        times = [int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines()]
        rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
        runs.append((rps, statistics.mean(times), percentile(times, 0.99), max(times),
                     sum(t > 10 for t in times), [t for t in times if t > 10]))
    slow = [t for run in runs for t in run[5]]
    return (f"h2load -n 2000 -c 1 -m 1 ({protocol.group(1) if protocol else 'TLS ?'}, "
            f"{application.group(1) if application else '?'}), 3 runs: "
            f"{statistics.median(r[0] for r in runs):,.0f} req/s (median), mean "
            f"{statistics.median(r[1] for r in runs):.2f} ms, p99 {statistics.median(r[2] for r in runs):.2f} ms, "
            f"max {' / '.join(f'{r[3]:.1f}' for r in runs)} ms; requests over 10 ms: "
            f"{' / '.join(str(r[4]) for r in runs)} of 2,000"
            + (f" (the slowest: {', '.join(f'{t:.0f}' for t in sorted(slow, reverse=True)[:8])} ms)" if slow else ""))


def forged_log_line(bench, server):
    forged = "x\n2026-01-01T00:00:00.000000Z  INFO portcullis: forged\x1b[2J"
    review = json.loads(REVIEW_FILE.read_bytes())
    review["request"]["uid"] = forged
    status, _, _, _ = exchange(server.api, post("/validate/privileged-monitor", json.dumps(review).encode()))
    for _ in range(40):
        if any("monitor mode: verdict not enforced" in line for line in server.logs):
            break
        time.sleep(0.05)
    lines = list(server.logs)
    logged = next((line for line in lines if "monitor mode: verdict not enforced" in line), None)
    forged_lines = sum(line.startswith("2026-01-01T00:00:00.000000Z") for line in lines)
    escapes = sum("\x1b" in line for line in lines)
    uid = re.search(r"uid=(.*?) (?:outcome|verdict)=", logged) if logged else None
    return (f"answered {status}; forged lines: {forged_lines}, lines with a raw ESC: {escapes}; "
            f"the uid logged as {code(uid.group(1)) if uid else 'not found'}")


def expect_continue(bench, server):
    head = (b"POST /validate/privileged HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n")
    started = time.perf_counter()
    with socket.create_connection(split_addr(server.api), timeout=10) as sock:
        sock.sendall(head)
        first = sock.recv(4096)
        took = (time.perf_counter() - started) * 1000
        try:
            while b"\r\n\r\n" in first and len(first) < 1 << 16 and (more := sock.recv(4096)):
                first += more
        except OSError:
            pass
    line = first.split(b"\r\n", 1)[0].decode("latin-1")
    body = first.partition(b"\r\n\r\n")[2].decode("latin-1", "replace")
    return f"first status line {code(line)} after {took:.1f} ms, body {code(body)}"


def slow_policy_sweep(bench, server):
    summary, table = slow_policies.run(server)
    bench.tables.append(table)
    return summary


def invalid_utf8_id(bench, server):
    status, head, body, _ = exchange(server.api, post("/validate/%FF", b"{}"))
    content_type = re.search(r"(?im)^content-type:\s*(\S+)", head)
    return (f"{code(f'{status} {content_type.group(1) if content_type else chr(45)}')}: "
            f"{code(body.decode('latin-1'))}")


def held_until_the_end(peers):
    """outcome() of attacker connections that reconnect until the attack
    ends: those it still held then are its last, not ones the server kept."""
    closed = [p for p in peers if p.opened is None or p.closed is not None]
    held = len(peers) - len(closed)
    return outcome(closed) + (f", {held} open when the attack ended" if held else "")


def busy_connections(bench, server):
    """Issue 20, finding 1: every connection holds a request whose body never
    gets past its first byte; closed, it connects again."""
    head = (b"POST /validate/privileged HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{")

    async def one(until):
        peers = []
        while time.monotonic() < until:
            peers.append(await attacker(server.api, head, deadline=until))
            if peers[-1].opened is None:
                await asyncio.sleep(0.05)
        return peers

    async def attack():
        until = time.monotonic() + ATTACK_S
        return await asyncio.gather(*(one(until) for _ in range(512)))

    peers = [peer for connections in asyncio.run(attack()) for peer in connections]
    lived = sorted(p.closed - p.opened for p in peers if p.closed and p.opened)
    return (f"{len(peers):,} connections: {held_until_the_end(peers)}; closed by the server after "
            f"p50 {percentile(lived, 0.5):.2f} / p99 {percentile(lived, 0.99):.2f} / max {lived[-1]:.1f} s "
            f"(--request-body-timeout {BODY_TIMEOUT_S} s)" if lived else
            f"{len(peers)} connections: {held_until_the_end(peers)}")


def hoarded_budget(bench, server):
    """Issue 20, finding 1 through the budget: bodies sent but for their last
    0.6 MB, never finished; refused or closed, the attacker connects again.
    Beside it, a 1 MB review (not a small body) every second."""
    declared, sent = 8_380_000, b" " * 7_800_000
    head = (f"POST /validate/privileged HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    large = post("/validate/privileged", large_review(1_000_000))

    async def one(until):
        peers = []
        while time.monotonic() < until:
            peers.append(await attacker(server.api, head, sent, deadline=until))
            if peers[-1].opened is None:
                await asyncio.sleep(0.05)
        return peers

    async def large_reviews(until):
        statuses = collections.Counter()
        while time.monotonic() < until - 1:
            await asyncio.sleep(1)
            peer = await attacker(server.api, b"", large, deadline=until + 10)
            statuses[peer.status or peer.error or NO_ANSWER] += 1
        return statuses

    async def attack():
        until = time.monotonic() + ATTACK_S
        return await asyncio.gather(large_reviews(until), *(one(until) for _ in range(60)))

    large_statuses, *hoarders = asyncio.run(attack())
    peers = [peer for connections in hoarders for peer in connections]
    return (f"60 connections for {ATTACK_S} s, {len(peers):,} in all: {held_until_the_end(peers)}; beside them a 1 MB "
            f"review every second: " + ", ".join(f"{n} × {s}" for s, n in large_statuses.most_common()))


def shut_window(bench, server):
    """Issue 20, finding 2: HTTP/2 clients announcing a receive window of 0
    post reviews whose uid is 7 MB, one stream after another, never taking an
    answer; closed, they connect again."""
    review = json.loads(REVIEW_FILE.read_bytes())
    review["request"]["uid"] = "u" * 7_000_000
    body = json.dumps(review, separators=(",", ":")).encode()

    async def one(until):
        streams, waited = [], []
        while time.monotonic() < until:
            client = H2Client(server.api, 32, window=0)
            try:
                await client.connect()
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.1)
                continue
            last_answer = None
            for _ in range(32):
                stream = await client.open("/validate/privileged", body, len(body))
                if stream is None:
                    break
                streams.append(stream)
                await client.until(lambda: stream.status is not None, timeout=30)
                if stream.status is None:
                    break
                last_answer = time.monotonic()
                if stream.status != 200:
                    client.cancel(stream)
            # Nothing is read: the connection ends when the server closes it.
            await client.until(lambda: False, timeout=max(0.0, until + 30 - time.monotonic()))
            if client.goaway is not None and last_answer is not None:
                waited.append(time.monotonic() - last_answer)
            client.close()
        return streams, waited

    async def attack():
        until = time.monotonic() + ATTACK_S
        return await asyncio.gather(*(one(until) for _ in range(6)))

    results = asyncio.run(attack())
    streams = [s for streams, _ in results for s in streams]
    waited = [w for _, waits in results for w in waits]
    answers = collections.Counter(str(s.status) if s.status else "no answer" for s in streams)
    return (f"6 connections × up to 32 streams for {ATTACK_S} s, {len(waited)} connections closed by the server: "
            f"answer heads " + ", ".join(f"{n} × {s}" for s, n in answers.most_common())
            + (f"; each connection closed {max(waited):.1f} s at most after its last answer's head "
               f"(--response-send-timeout 10 s)" if waited else ""))


def unread_answers(bench, server):
    """Issue 20, finding 2 over HTTP/1: clients that post reviews whose uid is
    7 MB and never read, with a 16 KiB receive buffer; 15 s later each reads
    what is left: all of the answer, or what came before the server closed."""
    review = json.loads(REVIEW_FILE.read_bytes())
    review["request"]["uid"] = "u" * 7_000_000
    request = post("/validate/privileged", json.dumps(review, separators=(",", ":")).encode())
    answer_size = 7_000_000

    async def one():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, split_addr(server.api)), timeout=10)
        except (OSError, asyncio.TimeoutError):
            sock.close()
            return "not connected"
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(request)
            await asyncio.wait_for(writer.drain(), timeout=15)
        except (OSError, asyncio.TimeoutError):
            # Refused by the budget before its body was read: the server
            # answered 503 and closed; the reset takes the answer with it.
            writer.transport.abort()
            return "refused while sending (reset)"
        await asyncio.sleep(15)
        received, ended = 0, "still open at 20 s"
        try:
            while data := await asyncio.wait_for(reader.read(1 << 20), timeout=5):
                received += len(data)
            ended = "closed"
        except asyncio.TimeoutError:
            pass
        except OSError as error:
            ended = type(error).__name__
        writer.transport.abort()
        if received >= answer_size:
            return "the whole answer"
        return f"{ended} after {received / 1e6:.1f} MB"

    async def attack():
        return await asyncio.gather(*(one() for _ in range(64)))

    ends = collections.Counter(asyncio.run(attack()))
    return ("64 connections, each a 7 MB-uid review, its answer unread for 15 s, then read: "
            + ", ".join(f"{n} × {what}" for what, n in ends.most_common()))


# Number, attack, function, server options, whether RSS is the point, watcher options.
ROWS = [
    (1, "90 connections × 8,000,000 bytes of an 8,300,000-byte body, never finished",
     unfinished_bodies, {}, True, {}),
    (2, "one HTTP/2 connection, 100 streams × 7.5 MB unfinished bodies", unfinished_h2_streams, {}, True, {}),
    (3, "2,000 connections × 400 KB of unfinished request head", heads_on_api, {}, True, {}),
    (4, "the same on the plain-HTTP probe port of an mTLS server", heads_on_probes, {"mtls": True}, True, {}),
    (5, "1,100 idle connections, the process at 1,024 open files", idle_connections,
     {"open_files": 1024}, True, {}),
    (6, "slowloris: 500 connections × 1 byte/s of head", slowloris, {}, True, {}),
    (7, "100 concurrent valid 7.3 MB reviews", large_reviews, {}, True, {}),
    (8, "4 clients posting 8 MB / 500k-key documents to /validate_raw for 10 s", raw_documents, {}, True,
     {"interval": 0.05}),
    (9, "256 concurrent requests to the 2 s sleep policy, beside a normal policy", slow_policy_flood, {}, True, {}),
    (10, "one HTTP/2 connection with 200 streams beside a sequential HTTP/1.1 client", multiplexing_client, {},
     True, {"sequential": True}),
    (11, "SIGHUP with 6 requests in flight", sighup, {}, False, {}),
    (12, "TLS 1.3 + HTTP/2, one request at a time, 2,000 sequential", tls_h2_sequential, {"tls": True}, False, {}),
    (13, "uid with a newline and an ESC byte, default text logs", forged_log_line, {"text_logs": True}, False, {}),
    (14, "`Expect: 100-continue` with a 10 GB Content-Length", expect_continue, {}, False, {}),
    (15, "invalid UTF-8 in the policy id (`/validate/%FF`)", invalid_utf8_id, {}, False, {}),
    (16, f"busy connections: 512 × a request with `Content-Length: 100` and 1 byte, connecting again when "
         f"closed, {ATTACK_S} s", busy_connections, {}, True, {"sequential": True, "pause": 0.25}),
    (17, f"budget hoarding: 60 connections × 7.8 MB of an 8.38 MB body, never finished, connecting again, "
         f"{ATTACK_S} s", hoarded_budget, {}, True, {"sequential": True, "pause": 0.25}),
    (18, f"HTTP/2 receive window 0: 6 connections × 32 streams of reviews with a 7 MB uid, one after another, "
         f"connecting again, {ATTACK_S} s", shut_window, {}, True, {"sequential": True, "pause": 0.25}),
    (19, "HTTP/1 answers nobody reads: 64 connections × a review with a 7 MB uid, 16 KiB receive buffer",
     unread_answers, {}, True, {"sequential": True, "pause": 0.25}),
    ("20.3", "K slow policies (K = 1..8, sleeping or spinning to a 1 s deadline), one request each in flight, "
     "beside a sequential client of another policy", slow_policy_sweep, {"slow_policies": True}, False, {}),
]


# --- hostile registries (issue 20, findings 4 and 5) ------------------------------------------

# Issue 20's "measured" for its findings 4 and 5.
REGISTRY_BEFORE = {
    "20.4a": "readiness 503 for 130 s+ with nothing logged (dripping blob and dripping manifest alike)",
    "20.4b": "the fetch blocks the reload loop: a good configuration written afterwards is never applied",
    "20.4c": "the same with `--watch`: the corrected file is never applied",
    "20.5a": "607 MiB RSS before \"the manifest is larger than 4194304 bytes\" (read whole before the check)",
    "20.5b": "peak 1,747 MiB (each buffered to 256 MiB), over the shipped 768 MiB limit",
}
# The shipped fetch deadline (host/src/source/mod.rs DEFAULT_DEADLINE, --fetch-timeout).
FETCH_DEADLINE_S = 120
# How long a stuck reload is left before the corrected configuration is written.
STUCK_S = 15
CORRECTED = f"extra: {{ module: {COMPONENTS / 'pod_privileged.wasm'} }}\n"


class Starting:
    """A `portcullis serve` whose start-up is watched until it exits (or
    serves, or `limit_s` pass): its /readiness answers every second, its
    log lines (JSON) and its peak RSS (VmHWM, read every 50 ms)."""

    def __init__(self, bench, policies, limit_s):
        self.started = time.monotonic()
        self.started_wall = time.time()
        args = [str(bench.binary), "serve", "--addr", "127.0.0.1", "--port", "0", "--readiness-probe-port", "0",
                "--workers", str(WORKERS), "--components-dir", str(COMPONENTS), "--log-fmt", "json",
                "--policies", policies, "--cache-dir", bench.cache, *bench.registry_args()]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.lines = []
        reading = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        reading.start()
        self.readiness = collections.Counter()
        self.peak_mib = 0.0
        probes = None
        next_probe = time.monotonic()
        while self.process.poll() is None and time.monotonic() - self.started < limit_s:
            try:
                self.peak_mib = max(self.peak_mib, process_status_kib(self.process.pid)["VmHWM"] / 1024)
            except (FileNotFoundError, KeyError):
                pass
            probes = probes or next((json.loads(l)["fields"]["readiness_addr"] for l in list(self.lines)
                                     if "probes listening" in l), None)
            if probes and time.monotonic() >= next_probe:
                status, _, _, _ = exchange(probes, get("/readiness"), timeout=5)
                self.readiness[status or "no answer"] += 1
                next_probe += 1
            time.sleep(0.05)
        self.took = time.monotonic() - self.started
        if self.process.poll() is None:
            stop_process(self.process)
        reading.join(10)

    def logged(self, message):
        """The times (s after the start) of the JSON lines with `message`."""
        found = []
        for line in self.lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("fields", {}).get("message") == message:
                at = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
                found.append(at)
        return found

    def error(self):
        """The error it exited with (its first line and the policies listed)."""
        text = "".join(l for l in self.lines if not l.startswith("{")).strip()
        return re.sub(r"registry://127\.0\.0\.1:\d+/", "registry://HOST/", text)

    def error_cell(self):
        """The error for a table cell: a code span per line."""
        return " ".join(code(line.strip()) for line in self.error().splitlines())

    def outcome(self):
        code_ = self.process.returncode
        return f"exited {code_} after {self.took:.1f} s" if code_ is not None else f"**still running after {self.took:.0f} s**"


def policies_file(bench, text):
    path = Path(bench.scratch) / f"policies-{time.monotonic_ns()}.yml"
    path.write_text(text)
    return str(path)


def readiness(counter):
    return ", ".join(f"{n} × {status}" for status, n in counter.most_common()) or "— (it exited before the first probe)"


def start_up_drip(bench, registry):
    slow = {"slow-manifest": registry.uri("drip-manifest", "policy"),
            "slow-module": registry.uri("drip-blob", "policy")}
    policies = policies_file(bench, "".join(f"{name}: {{ module: {uri} }}\n" for name, uri in slow.items()))
    start = Starting(bench, policies, FETCH_DEADLINE_S + 60)
    waiting = start.logged("waiting for a module fetch")
    first = f", the first {min(waiting) - start.started_wall:.0f} s in" if waiting else ""
    measured = (f"`--fetch-timeout` {FETCH_DEADLINE_S} (the default): \"waiting for a module fetch\" logged "
                f"{len(waiting)} × for the 2 fetches{first}; {start.outcome()}: {start.error_cell()}")
    return measured, "— (starting)", f"/readiness {readiness(start.readiness)}", start.took


def reload_drip(bench, registry, watch):
    policies = policies_file(bench, absolute_modules(POLICIES))
    write_policies_to = Path(policies)
    args = bench.registry_args() + (["--watch"] if watch else [])
    server = Server(WORKERS, policies=policies, cache_dir=bench.cache, extra_args=args, keep_logs=True,
                    binary=bench.binary,
                    log_level="warn,portcullis::server=info,portcullis::commands::reload=info")
    try:
        watcher = Watcher(server)
        started = time.monotonic()
        if watch:
            stuck = f"stuck: {{ module: {registry.uri('drip-blob', 'policy')} }}\n"
            what = f"a module dripping 1 byte / {registry.drip:.0f} s, the file written (`--watch`)"
        else:
            stuck = "".join(f"stuck-{i}: {{ module: {registry.uri('drip-manifest', f'policy-{i}')} }}\n"
                            for i in range(10))
            what = f"10 policies whose manifests drip 1 byte / {registry.drip:.0f} s, then SIGHUP"
        write_policies_to.write_text(absolute_modules(POLICIES) + stuck)
        if not watch:
            os.kill(server.process.pid, signal.SIGHUP)
        time.sleep(STUCK_S)
        at_once = registry.most_open
        written = time.monotonic()
        write_policies_to.write_text(absolute_modules(POLICIES) + CORRECTED)
        if not watch:
            os.kill(server.process.pid, signal.SIGHUP)
        applied = closed = None
        for _ in range(1200):
            if applied is None and any("configuration reloaded" in l for l in server.logs):
                applied = time.monotonic() - written
            if closed is None and registry.open == 0:
                closed = (registry.last_closed or time.monotonic()) - written
            if applied is not None and closed is not None:
                break
            time.sleep(0.05)
        status, _, body, _ = exchange(server.api, post("/validate/extra", REVIEW_FILE.read_bytes()))
        superseded = any("supersedes the reload under way" in l for l in server.logs)
        time.sleep(0.5)
        rounds, _ = watcher.stop()
        measured = (f"{what}; {at_once} fetched at once; the corrected configuration {STUCK_S} s later"
                    f"{'' if watch else ' + SIGHUP'}: applied after "
                    + (f"{applied:.2f} s" if applied is not None else "**never (60 s)**")
                    + f", the stuck fetches' connections closed after "
                    + (f"{closed:.2f} s" if closed is not None else "**never (60 s)**")
                    + f" (\"supersedes\" {'logged' if superseded else '**not logged**'}); the new policy "
                    f"answers {status}{' + deny' if verdict_ok(status, body) else ''}")
        probes = f"/livez {summarize(rounds['livez'], False)}; /readiness {summarize(rounds['readiness'], False)}"
        return measured, summarize(rounds["review"]), probes, time.monotonic() - started
    finally:
        server.stop()


def huge_manifest(bench, registry):
    policies = policies_file(bench, f"huge: {{ module: {registry.uri('huge-manifest', 'policy')} }}\n")
    registry.reset()
    start = Starting(bench, policies, FETCH_DEADLINE_S + 60)
    measured = (f"a {registry.huge / 1e6:,.0f} MB chunked manifest at start-up: peak RSS {start.peak_mib:.0f} MiB "
                f"(a server at rest: {bench.rest_mib:.0f} MiB); the registry sent {registry.sent / 2**20:.1f} MiB "
                f"before the connection closed; {start.outcome()}: {start.error_cell()}")
    return measured, "— (starting)", f"/readiness {readiness(start.readiness)}", start.took


def endless_modules(bench, registry):
    policies = policies_file(bench, "".join(
        f"endless-{i}: {{ module: {registry.uri('endless-blob', f'policy-{i}')} }}\n" for i in range(8)))
    registry.reset()
    start = Starting(bench, policies, FETCH_DEADLINE_S + 60)
    left = list((Path(bench.downloads) / "tmp").glob("*"))
    errors = re.findall(r"policy `endless-\d+` \(registry://HOST/[^)]*\): ([^\n]*)", start.error())
    measured = (f"8 policies whose modules never end, at start-up: {registry.most_open} fetched at once, "
                f"peak RSS {start.peak_mib:.0f} MiB (a server at rest: {bench.rest_mib:.0f} MiB); the registry "
                f"sent {registry.sent / 2**20:,.0f} MiB; {start.outcome()}, "
                + (f"{len(errors)} × {code(errors[0])}" if errors and len(set(errors)) == 1 else start.error_cell())
                + f"; files left in the store's tmp/: {len(left)}")
    return measured, "— (starting)", f"/readiness {readiness(start.readiness)}", start.took


# Id, attack, function.
REGISTRY_ROWS = [
    ("20.4a", "start-up: a manifest and a module dripping 1 byte / 5 s", start_up_drip),
    ("20.4b", "reload by SIGHUP stuck on dripping manifests, then a corrected configuration",
     lambda bench, registry: reload_drip(bench, registry, watch=False)),
    ("20.4c", "reload by `--watch` stuck on a dripping module, then a corrected file",
     lambda bench, registry: reload_drip(bench, registry, watch=True)),
    ("20.5a", "start-up: a 600 MB chunked manifest", huge_manifest),
    ("20.5b", "start-up: 8 policies whose modules never end, fetched in parallel", endless_modules),
]


class Bench:
    def __init__(self, binary=BINARY):
        self.binary = binary
        self.scratch = tempfile.mkdtemp(prefix="portcullis-abuse-")
        self.cache = scratch_dir()
        self.policies = write_policies(POLICIES)
        self.slow_policies = write_policies(POLICIES + slow_policies.policies())
        self.tables = []
        self.pki = make_pki(self.scratch)
        # Compile the components into the cache once, so that no row's
        # baseline includes a compilation.
        Server(WORKERS, policies=self.policies, cache_dir=self.cache, binary=binary).stop()

    def server(self, mtls=False, tls=False, open_files=None, text_logs=False, slow_policies=False):
        args = []
        if mtls or tls:
            args += ["--cert-file", self.pki["server.crt"], "--key-file", self.pki["server.key"]]
        if mtls:
            args += ["--client-ca-file", self.pki["ca.crt"]]
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))) if open_files else None
        # The reload trigger logs its cause (row 11) from portcullis::commands::reload.
        options = {"log_fmt": "text", "log_level": None} if text_logs else {
            "log_level": "warn,portcullis::server=info,portcullis::commands::reload=info"}
        policies = self.slow_policies if slow_policies else self.policies
        server = Server(WORKERS, policies=policies, cache_dir=self.cache, extra_args=args,
                        preexec_fn=limit, keep_logs=True, binary=self.binary, **options)
        client = (self.pki["ca.crt"], self.pki["client.crt"], self.pki["client.key"]) if mtls else (
            (self.pki["ca.crt"], None, None) if tls else None)
        return server, client

    def reset_peak(self, server):
        """Restarts the kernel's count of the server's peak RSS (VmHWM), keeping
        the peak so far in `peaks` (one row may measure several)."""
        if server.memory_kib()[1] > 0 and getattr(self, "peaks", None) is not None:
            self.peaks.append(self.peak(server))
        with open(f"/proc/{server.process.pid}/clear_refs", "w") as f:
            f.write("5")

    @staticmethod
    def peak(server):
        return server.memory_kib()[1] / 1024

    def start_registry(self):
        """The stand-in registry, its sources.yml, a download store, and
        the RSS of a server at rest (what a fetch's peak is compared to)."""
        self.registry = HostileRegistry(drip=5.0, huge=600_000_000)
        self.sources = Path(self.scratch) / "sources.yml"
        self.sources.write_text(self.registry.sources_yml())
        self.downloads = Path(self.scratch) / "downloads"
        server = Server(WORKERS, policies=self.policies, cache_dir=self.cache, binary=self.binary)
        try:
            for _ in range(20):
                exchange(server.api, post("/validate/privileged", REVIEW_FILE.read_bytes()))
            time.sleep(0.5)
            self.rest_mib = rss(server)
        finally:
            server.stop()

    def registry_args(self):
        return ["--sources-path", str(self.sources), "--policies-download-dir", str(self.downloads)]

    def cleanup(self):
        if getattr(self, "registry", None):
            self.registry.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)
        os.unlink(self.policies)
        os.unlink(self.slow_policies)


def run_row(bench, row):
    number, _, attack, options, memory, watch = row
    server, tls = bench.server(**options)
    try:
        request = post("/validate/privileged", REVIEW_FILE.read_bytes())
        for _ in range(20):
            status, _, body, _ = exchange(server.api, request, client_tls(tls))
            if not verdict_ok(status, body):
                sys.exit(f"row {number}: the server does not answer a normal review: {status} {body[:200]}")
        time.sleep(0.5)
        baseline = rss(server)
        bench.peaks = None
        bench.reset_peak(server)
        bench.peaks = []
        watcher = Watcher(server, tls, **watch)
        started = time.monotonic()
        try:
            measured = attack(bench, server)
        finally:
            rounds, steady = watcher.stop()
        took = time.monotonic() - started
        alive = server.process.poll() is None
        if alive and memory:
            counted = counters(server)
            measured += f"; the server counted: {counted or 'no refusals'}"
        if memory and alive:
            peak = max([bench.peak(server), *bench.peaks])
            time.sleep(SETTLE_S)
            measured = (f"RSS {baseline:.0f} → peak {peak:.0f} MiB, {rss(server):.0f} MiB {SETTLE_S} s after; "
                        + measured)
        if not alive:
            measured = f"**the server died ({server.process.returncode})**; " + measured
        normal = summarize(rounds["review"])
        if steady:
            normal += f"; keep-alive client: {summarize(steady)}"
        probes = f"/livez {summarize(rounds['livez'], False)}; /readiness {summarize(rounds['readiness'], False)}"
        return measured, normal, probes, took
    finally:
        server.stop()


def run_registry_row(bench, row):
    """One hostile-registry row, with an empty download store."""
    shutil.rmtree(bench.downloads, ignore_errors=True)
    bench.registry.reset()
    return row[2](bench, bench.registry)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-build", action="store_true", help="use the release binary and components as built")
    parser.add_argument("--only", help="comma-separated row ids, e.g. 1,12,20.4a (default: every row)")
    parser.add_argument("--binary", type=Path, default=BINARY,
                        help="the portcullis build to attack (default: target/release/portcullis)")
    args = parser.parse_args()
    only = {n.strip() for n in args.only.split(",")} if args.only else None
    ensure_h2()
    ensure_h2load()
    if not args.no_build:
        build()
    raise_own_open_files()
    bench = Bench(args.binary)
    load = os.getloadavg()
    results = []
    registry_results = []
    try:
        for row in ROWS:
            if only and str(row[0]) not in only:
                continue
            print(f"row {row[0]}: {row[1]} ...", file=sys.stderr, flush=True)
            results.append((row, *run_row(bench, row)))
        registry_rows = [row for row in REGISTRY_ROWS if not only or row[0] in only]
        if registry_rows:
            bench.start_registry()
        for row in registry_rows:
            print(f"row {row[0]}: {row[1]} ...", file=sys.stderr, flush=True)
            registry_results.append((row, *run_registry_row(bench, row)))
    finally:
        bench.cleanup()
    load_after = os.getloadavg()

    print(f"{datetime.date.today()}; {machine()}; load average {load[0]:.1f} before, {load_after[0]:.1f} after; "
          f"release build, `portcullis serve` defaults and --workers {WORKERS}, a fresh server per attack; "
          f"attacker and watcher on the same machine (127.0.0.1). \"Normal review\": one on a fresh connection "
          f"every 250 ms during the attack (every 50 ms in row 8), from a separate process; in rows 10 and 16-19, "
          f"also a keep-alive client connected before the attack (row 10: back to back; 16-19: every 250 ms).\n")
    if results:
        print("| # | attack | before (issues 11, 20) | after (this run) | normal review during | probes during | s |")
        print("|---:|---|---|---|---|---|---:|")
        for (number, attack, *_), measured, normal, probes, took in results:
            print(f"| {number} | {attack} | {BEFORE[number]} | {measured} | {normal} | {probes} | {took:.0f} |")
        for table in bench.tables:
            print(f"\n{table}")
    if registry_results:
        print(f"\nHostile registries (issue 20, findings 4 and 5): the stand-in bench/hostile_registry.py on "
              f"127.0.0.1 (an insecure source), the shipped fetch defaults (`--fetch-timeout` {FETCH_DEADLINE_S}, "
              f"8 fetches at once); peak RSS is the server's VmHWM, read every 50 ms until it exited.\n")
        print("| # | attack | before (issue 20) | after (this run) | normal review during | probes during | s |")
        print("|---|---|---|---|---|---|---:|")
        for (number, attack, _), measured, normal, probes, took in registry_results:
            print(f"| {number} | {attack} | {REGISTRY_BEFORE[number]} | {measured} | {normal} | {probes} "
                  f"| {took:.0f} |")


if __name__ == "__main__":
    main()
