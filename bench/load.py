"""The load generators of bench/compare_kubewarden.py, run against any policy
server: wrk (HTTP/1.1, clear text) and h2load (TLS + HTTP/2), each returning
requests/s, p50, p99, errors and the server's CPU time per request.

Server CPU per request is the method of BENCHMARKS.md §3: the server
process's user + system time (/proc/PID/stat) over the run, divided by the
requests the run completed.
"""

import os
import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

# wrk's request: a POST of the file named by $PORTCULLIS_BODY.
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("PORTCULLIS_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
"""

# Portcullis's default `--http2-max-concurrent-streams`. Go's HTTP/2 client
# (the API server's) opens another connection when a server's stream limit
# is reached, so N concurrent streams are ceil(N / 32) connections of at
# most 32 streams each; both servers get the same shape of load.
STREAMS_PER_CONNECTION = 32


@dataclass
class Run:
    """One load-generator run against one server."""
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us_per_request: float
    protocol: str = ""
    shape: str = ""


def to_ms(text):
    """A wrk or h2load duration ("812.00us", "1.20ms", "2.00s") in ms."""
    value, unit = float(re.match(r"([\d.]+)", text).group(1)), re.sub(r"[\d.]", "", text)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def ensure_wrk():
    """Installs wrk (Debian package) when missing."""
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)


def ensure_tools():
    """Installs wrk and h2load (Debian packages) when missing."""
    missing = [package for tool, package in [("wrk", "wrk"), ("h2load", "nghttp2-client")] if not shutil.which(tool)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", *missing], check=True)


def tool_versions():
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{' '.join(wrk.split()[:2])}, {h2load}"


def lua_script(directory):
    path = Path(directory) / "post.lua"
    path.write_text(LUA)
    return path


def _timed(server, command, env=None):
    """Runs `command` to completion; returns (stdout, server CPU seconds used meanwhile)."""
    before = server.cpu_seconds()
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    used = server.cpu_seconds() - before
    if out.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout, used


def wrk(server, policy, body, connections, seconds, script):
    """wrk: keep-alive HTTP/1.1, `connections` connections on up to 2 threads."""
    url = f"{server.base_url}/validate/{policy}"
    threads = min(2, connections)
    out, cpu = _timed(server, ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                               "--latency", "-s", str(script), url],
                      env={**os.environ, "PORTCULLIS_BODY": str(body)})
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return Run(rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
               p50_ms=to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
               p99_ms=to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
               errors=errors, requests=requests,
               cpu_us_per_request=cpu * 1e6 / max(requests, 1), protocol="HTTP/1.1",
               shape=f"{connections} connection{'s' * (connections > 1)} × 1")


def negotiated(server):
    """The application protocol `server` picks by ALPN when offered h2 and
    http/1.1 (h2load's default list), asked once per server."""
    if getattr(server, "alpn", None) is None:
        out = subprocess.run(["h2load", "-n", "1", "-c", "1", f"{server.base_url}/readiness"],
                             capture_output=True, text=True, timeout=60).stdout
        alpn = re.search(r"Application protocol: (\S+)", out)
        server.alpn = alpn.group(1) if alpn else "none"
    return server.alpn


def tls_shape(server, concurrent):
    """(connections, requests in flight per connection) for `concurrent`
    requests at once, as the API server's Go client would send them: HTTP/2
    streams, a new connection when STREAMS_PER_CONNECTION are open; to a
    server that does not speak HTTP/2, one connection per request in flight
    (Go's client does not pipeline HTTP/1.1)."""
    if negotiated(server) != "h2":
        return concurrent, 1
    connections = -(-concurrent // STREAMS_PER_CONNECTION)
    return connections, -(-concurrent // connections)


def h2load(server, policy, body, concurrent, seconds, log):
    """h2load over TLS 1.3: `concurrent` requests in flight (see tls_shape);
    latency percentiles from its per-request log."""
    url = f"{server.base_url}/validate/{policy}"
    connections, per_connection = tls_shape(server, concurrent)
    out, cpu = _timed(server, ["h2load", "-t", str(min(2, connections)), "-c", str(connections),
                               "-m", str(per_connection), "-D", str(seconds), "-d", str(body),
                               "-H", "content-type: application/json", f"--log-file={log}", url])
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    # In duration mode the streams still open at the end are "started", not "done".
    requests = int(done.group(3)) if done else 0
    errors = requests - (int(ok.group(1)) if ok else 0)
    times = sorted(int(line.split("\t")[2]) / 1000 for line in Path(log).read_text().splitlines() if line)
    Path(log).unlink()
    tls = re.search(r"TLS Protocol: (\S+)", out)
    alpn = re.search(r"Application protocol: (\S+)", out)
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    return Run(rps=float(rps.group(1)) if rps else 0.0,
               p50_ms=statistics.median(times) if times else float("nan"),
               p99_ms=times[min(len(times) - 1, int(0.99 * len(times)))] if times else float("nan"),
               errors=errors, requests=requests,
               cpu_us_per_request=cpu * 1e6 / max(requests, 1),
               protocol=f"{tls.group(1) if tls else 'no TLS'} {alpn.group(1) if alpn else 'no ALPN'}",
               shape=f"{connections} connection{'s' * (connections > 1)} × {per_connection}")
