"""The clients of bench/abuse.py: a normal client beside each attack (in a
process of its own), and the attackers — HTTP/1.1 connections and HTTP/2
streams over asyncio, each recording what the server answered and when it
closed the connection. Every socket goes to 127.0.0.1; every wait is bounded.
"""

import asyncio
import collections
import json
import multiprocessing
import re
import socket
import ssl
import statistics
import sys
import threading
import time

from common import ROOT

REVIEW_FILE = ROOT / "examples" / "pod-privileged" / "test_data" / "privileged_pod_review.json"
VERDICT = "Privileged container is not allowed"
NO_ANSWER = "no answer"

# --- plain HTTP/1.1, blocking (the watcher's side) --------------------------------------------

def split_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def post(path, body):
    return (f"POST {path} HTTP/1.1\r\nHost: portcullis\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def get(path):
    return f"GET {path} HTTP/1.1\r\nHost: portcullis\r\nConnection: close\r\n\r\n".encode()


def exchange(addr, request, tls=None, timeout=30):
    """One request on a fresh connection (TCP_NODELAY, like the API server's
    client): (status or None, head, body, seconds from connecting)."""
    started = time.perf_counter()
    chunks = []
    try:
        with socket.create_connection(split_addr(addr), timeout=timeout) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = tls.wrap_socket(raw, server_hostname="localhost") if tls else raw
            sock.sendall(request)
            while data := sock.recv(1 << 16):
                chunks.append(data)
    except OSError as error:
        return None, type(error).__name__, b"", time.perf_counter() - started
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(response[9:12]) if response.startswith(b"HTTP/1.") and response[9:12].isdigit() else None
    return status, head.decode("latin-1"), body, time.perf_counter() - started


def client_tls(tls):
    """An SSL context from ("ca path", "client cert or None", "key or None")."""
    if tls is None:
        return None
    ca, cert, key = tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    if cert:
        context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def verdict_ok(status, body):
    if status != 200:
        return False
    try:
        response = json.loads(body)["response"]
    except (ValueError, KeyError, TypeError):
        return False
    return response.get("allowed") is False and response.get("status", {}).get("message") == VERDICT


# --- the watcher: a normal client beside the attack, in its own process -----------------------

def _watch(pipe, api, probes, tls, interval, sequential, pause):
    """Runs in a separate process, so that the attacker's CPU use in this one
    does not show up in the latencies it measures."""
    context = client_tls(tls)
    review = REVIEW_FILE.read_bytes()
    request = post("/validate/privileged", review)
    rounds = {"review": [], "livez": [], "readiness": []}
    steady = []
    stop = threading.Event()
    thread = None
    if sequential:
        thread = threading.Thread(target=_sequential_client, args=(api, context, review, stop, steady, pause))
        thread.start()
    pipe.send("ready")
    deadline = time.monotonic() + 600
    next_round = time.monotonic()
    while time.monotonic() < deadline:
        status, _, body, took = exchange(api, request, context)
        rounds["review"].append((status, verdict_ok(status, body), took))
        for path in ("livez", "readiness"):
            status, _, _, took = exchange(probes, get(f"/{path}"))
            rounds[path].append((status, status == 200, took))
        next_round += interval
        if pipe.poll(max(0.0, next_round - time.monotonic())):
            break
    stop.set()
    if thread:
        thread.join()
    pipe.send((rounds, steady))


def _sequential_client(api, context, review, stop, results, pause=0.0):
    """A legitimate client: one review after another on a keep-alive
    connection opened before the attack (reconnecting when the server closes
    it), `pause` s apart."""
    import http.client
    host, port = split_addr(api)
    connection = None
    for _ in range(100_000):
        if stop.is_set():
            break
        if pause and results:
            stop.wait(pause)
        started = time.perf_counter()
        try:
            if connection is None:
                connection = (http.client.HTTPSConnection(host, port, context=context, timeout=30) if context
                              else http.client.HTTPConnection(host, port, timeout=30))
                connection.connect()
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.request("POST", "/validate/privileged", body=review,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
            results.append((response.status, verdict_ok(response.status, body), time.perf_counter() - started))
            if response.will_close:
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException):
            results.append((None, False, time.perf_counter() - started))
            if connection:
                connection.close()
            connection = None
    if connection:
        connection.close()


class Watcher:
    """The normal client beside an attack (`_watch`), started and stopped
    from here; `stop` returns what it measured."""

    def __init__(self, server, tls=None, interval=0.25, sequential=False, pause=0.0):
        context = multiprocessing.get_context("spawn")  # inherits none of the attacker's sockets
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=_watch, daemon=True,
                                       args=(child, server.api, server.probes, tls, interval, sequential, pause))
        self.process.start()
        if not self.pipe.poll(60):
            sys.exit("the watcher process did not start")
        self.pipe.recv()

    def stop(self):
        self.pipe.send("stop")
        if not self.pipe.poll(120):
            self.process.kill()
            sys.exit("the watcher process did not stop")
        results = self.pipe.recv()
        self.process.join(10)
        return results


def summarize(samples, verdict=True):
    """"n, how many failed, p50 / max ms" of (status, ok, seconds) samples."""
    if not samples:
        return "none"
    times = sorted(took * 1000 for _, _, took in samples)
    failed = collections.Counter(status for status, ok, _ in samples if not ok)
    what = "200 + deny verdict" if verdict else "200"
    answered = (f"all {len(samples)} {what}" if not failed else
                f"**{sum(failed.values())} of {len(samples)} not {what}** "
                f"({', '.join(f'{n} × {s or NO_ANSWER}' for s, n in failed.items())})")
    p99 = f" / p99 {percentile(times, 0.99):.1f}" if len(times) >= 100 else ""
    return f"{answered}; p50 {statistics.median(times):.1f}{p99} / max {times[-1]:.1f} ms"


def code(text):
    """`text` as a Markdown code span inside a table cell."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if "`" in text else ""
    escaped = text.replace("|", "\\|")
    return f"{fence}{pad}{escaped}{pad}{fence}"


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the attacker's HTTP/1 connections (asyncio) ----------------------------------------------

class Peer:
    """One attacker connection: when its head went out, what the server
    answered, when it closed the connection."""

    def __init__(self):
        self.opened = self.head_sent = self.status = self.closed = self.error = None


async def _read_answer(reader, peer):
    first = b""
    try:
        while data := await reader.read(1 << 16):
            if peer.status is None and len(first) < 12:
                first += data
                if first.startswith(b"HTTP/1.") and first[9:12].isdigit():
                    peer.status = int(first[9:12])
    except OSError as error:
        peer.error = type(error).__name__
    peer.closed = time.monotonic()


async def _write(writer, head, body, chunk, pause, peer):
    try:
        if head:
            writer.write(head)
            await writer.drain()
        peer.head_sent = time.monotonic()
        view = memoryview(body)
        for offset in range(0, len(view), chunk):
            writer.write(view[offset:offset + chunk])
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
    except OSError:
        pass  # the server closed: _read_answer sees it


async def attacker(addr, head, body=b"", *, deadline, hold=None, chunk=256 << 10, pause=0.0):
    """Connects to `addr`, sends `head` then `body` (`chunk` bytes every
    `pause` s), reads what comes back, and holds the connection until the
    server closes it, `deadline` (monotonic) passes, or `hold` s after it
    connected."""
    peer = Peer()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*split_addr(addr)), timeout=10)
    except (OSError, asyncio.TimeoutError) as error:
        peer.error = f"connect: {type(error).__name__}"
        return peer
    peer.opened = time.monotonic()
    if hold is not None:
        deadline = min(deadline, peer.opened + hold)
    reading = asyncio.create_task(_read_answer(reader, peer))
    writing = asyncio.create_task(_write(writer, head, body, chunk, pause, peer))
    await asyncio.wait([reading], timeout=max(0.0, deadline - time.monotonic()))
    for task in (writing, reading):
        task.cancel()
    await asyncio.gather(writing, reading, return_exceptions=True)
    writer.transport.abort()
    return peer


def outcome(peers):
    """"how each connection ended" for a list of Peers."""
    counts = collections.Counter()
    for peer in peers:
        if peer.opened is None:
            counts["not connected"] += 1
        elif peer.status is not None:
            counts[str(peer.status)] += 1
        elif peer.closed is not None:
            counts["closed unanswered" if peer.error is None else "reset"] += 1
        else:
            counts["**still open**"] += 1
    return ", ".join(f"{n} × {what}" for what, n in counts.most_common())


def last_closed(peers, since="opened"):
    """Seconds from each connection's `since` to the server closing it: the
    longest, or None if none was closed."""
    spans = [peer.closed - getattr(peer, since) for peer in peers
             if peer.closed is not None and getattr(peer, since) is not None]
    return max(spans) if spans else None


def still_open(peers):
    return sum(1 for peer in peers if peer.opened is not None and peer.closed is None)


# --- HTTP/2 (the `h2` package over asyncio) ---------------------------------------------------

class H2Stream:
    def __init__(self, body, end, stream_id=None):
        self.id = stream_id
        self.body, self.offset, self.end = memoryview(body), 0, end
        self.status = self.error = None
        self.done = False
        self.opened = time.monotonic()
        self.finished = None


class H2Client:
    """A prior-knowledge HTTP/2 client that keeps to the server's stream
    limit and flow control, and sends each stream's body as windows open."""

    def __init__(self, addr, max_streams, window=None):
        """`window`: the receive window announced for every stream (0: the
        server may send no DATA at all)."""
        self.addr, self.max_streams, self.window = addr, max_streams, window
        self.streams = {}
        self.changed = asyncio.Event()
        self.settings = asyncio.Event()
        self.goaway = None

    async def connect(self):
        import h2.config
        import h2.connection
        self.reader, self.writer = await asyncio.open_connection(*split_addr(self.addr))
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if self.window is not None:
            import h2.settings
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.window})
        self.flush()
        self.reading = asyncio.create_task(self._read())
        await asyncio.wait_for(self.settings.wait(), timeout=10)

    def limit(self):
        return min(self.max_streams, self.conn.remote_settings.max_concurrent_streams)

    async def open(self, path, body, declared, end=True):
        """Opens a stream when the limit allows (or returns None if the
        connection is gone): headers, then `body` as flow control allows."""
        deadline = time.monotonic() + 60
        while self.goaway is None and self.conn.open_outbound_streams >= self.limit():
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return None
        if self.goaway is not None:
            return None
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":authority", "portcullis"), (":path", path),
                   ("content-type", "application/json"), ("content-length", str(declared))]
        self.conn.send_headers(stream_id, headers, end_stream=False)
        stream = self.streams[stream_id] = H2Stream(body, end, stream_id)
        self.pump()
        self.flush()
        return stream

    def pump(self):
        import h2.exceptions
        for stream_id, stream in self.streams.items():
            if stream.done or (stream.offset >= len(stream.body) and not stream.end):
                continue
            try:
                while True:
                    left = len(stream.body) - stream.offset
                    size = min(left, self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                    if size <= 0 and left > 0:
                        break
                    last = stream.end and size == left
                    self.conn.send_data(stream_id, bytes(stream.body[stream.offset:stream.offset + size]),
                                        end_stream=last)
                    stream.offset += size
                    if last:
                        stream.end = False  # sent
                        break
                    if stream.offset >= len(stream.body):
                        break
            except h2.exceptions.H2Error:
                continue

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    def _finish(self, stream_id, error=None):
        import h2.errors
        import h2.exceptions
        stream = self.streams.get(stream_id)
        if stream is None or stream.done:
            return
        stream.done, stream.finished = True, time.monotonic()
        stream.error = stream.error or error
        try:  # the server answered before the body ended: give the stream up
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.H2Error:
            pass
        self.changed.set()

    async def _read(self):
        import h2.events
        try:
            while data := await self.reader.read(1 << 16):
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.RemoteSettingsChanged):
                        self.settings.set()
                    elif isinstance(event, h2.events.ResponseReceived):
                        self.streams[event.stream_id].status = int(dict(event.headers)[":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        self._finish(event.stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        self._finish(event.stream_id, f"reset {event.error_code!r}")
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        self.goaway = event.error_code
                self.pump()
                self.flush()
                self.changed.set()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if self.goaway is None:
                self.goaway = "connection closed"
            for stream_id in list(self.streams):
                self._finish(stream_id, "connection closed")
            self.changed.set()

    async def until(self, done, timeout):
        """Waits (at most `timeout` s) until `done()` or the connection ends."""
        deadline = time.monotonic() + timeout
        while not done() and self.goaway is None and time.monotonic() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        return done()

    def cancel(self, stream):
        """Gives a stream up (RST_STREAM CANCEL) and stops sending its body."""
        import h2.errors
        import h2.exceptions
        stream.done, stream.end = True, False
        try:
            self.conn.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.H2Error:
            pass
        self.flush()

    def close(self):
        self.reading.cancel()
        self.writer.transport.abort()


def h2_outcome(streams):
    counts = collections.Counter(str(s.status) if s.status else (s.error or "unanswered") for s in streams)
    return ", ".join(f"{n} × {what}" for what, n in counts.most_common())


