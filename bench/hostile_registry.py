"""A stand-in for a hostile OCI registry, for bench/abuse.py's rows of
issue 20's findings 4 and 5: plain HTTP/1.1 on 127.0.0.1 (listed as an
insecure source), one answer per connection, run on an asyncio loop in a
thread of its own. A real registry (docker-registry) cannot be made to drip
bytes or to send without end, which is what this one does. The repository's
first path segment says how it answers (host/tests/abuse/hostile_registry.rs
is the same for the CI tests):

- `drip-manifest/...`: a manifest's head (Content-Length: 4096), then one byte every `drip` s;
- `drip-blob/...`: a sound manifest, then the module one byte every `drip` s;
- `huge-manifest/...`: a chunked manifest of `huge` bytes (then it ends, unfinished JSON);
- `endless-blob/...`: a sound manifest giving the module 256 MiB, then a chunked module without end.

It counts the answers under way (and the most at once), the bytes sent, and
when the last answer under way ended. Every answer is bounded (in bytes, and
a drip in time); `stop()` ends them all.
"""

import asyncio
import hashlib
import json
import threading
import time

MAX_MODULE_BYTES = 256 << 20
ENDLESS_BYTES = 2 * MAX_MODULE_BYTES
DRIP_FOR_S = 900
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class HostileRegistry:
    def __init__(self, drip=5.0, huge=600_000_000):
        self.drip = drip
        self.huge = huge
        self.open = 0
        self.most_open = 0
        self.sent = 0
        self.last_closed = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the stand-in registry did not start")

    def _run(self, started):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._answer, "127.0.0.1", 0))
        self.host = "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    def stop(self):
        async def shut():
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()
        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def uri(self, kind, name):
        return f"registry://{self.host}/{kind}/{name}:v1"

    def sources_yml(self):
        return f'insecure_sources: ["{self.host}"]\n'

    def reset(self):
        with self._lock:
            self.most_open = self.open
            self.sent = 0
            self.last_closed = None

    # --- answers ------------------------------------------------------------------------------

    def _begin(self):
        with self._lock:
            self.open += 1
            self.most_open = max(self.most_open, self.open)

    def _end(self):
        with self._lock:
            self.open -= 1
            self.last_closed = time.monotonic()

    async def _answer(self, reader, writer):
        try:
            path = await self._path(reader)
            if path is None or not path.startswith("/v2/"):
                return
            rest = path[len("/v2/"):]
            if not rest:
                return await self._respond(writer, "application/json", b"{}")
            kind = rest.split("/", 1)[0]
            manifest = "/manifests/" in rest
            if kind == "drip-manifest" and manifest:
                await self._counted(self._drip(reader, writer, 4096, b"{"))
            elif kind == "drip-blob" and manifest:
                await self._respond(writer, OCI_MANIFEST, self._manifest(rest, 1 << 20))
            elif kind == "drip-blob":
                await self._counted(self._drip(reader, writer, 1 << 20, b"\0asm\x0d\0\x01\0"))
            elif kind == "huge-manifest" and manifest:
                await self._counted(self._chunked(writer, b'{"schemaVersion":2,', b" ", self.huge))
            elif kind == "endless-blob" and manifest:
                await self._respond(writer, OCI_MANIFEST, self._manifest(rest, MAX_MODULE_BYTES))
            elif kind == "endless-blob":
                await self._counted(self._chunked(writer, b"\0asm\x0d\0\x01\0", b"\0", ENDLESS_BYTES))
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _counted(self, answer):
        self._begin()
        try:
            await answer
        finally:
            self._end()

    @staticmethod
    async def _path(reader):
        """The request's path; None for what is not HTTP (the TLS hello an
        insecure source is tried with first)."""
        first = await reader.read(1)
        if not first or not first.isupper():
            return None
        head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        return head.split(b" ", 2)[1].decode("latin-1").split("?", 1)[0]

    @staticmethod
    async def _respond(writer, content_type, body):
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        await writer.drain()

    @staticmethod
    def _manifest(repository, size):
        name = repository.split("/manifests/", 1)[0]
        digest = hashlib.sha256(name.encode()).hexdigest()
        return json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                       "digest": "sha256:" + "0" * 64, "size": 2},
            "layers": [{"mediaType": "application/wasm", "digest": f"sha256:{digest}", "size": size}],
        }).encode()

    async def _drip(self, reader, writer, length, start):
        """`length` announced, one byte every `drip` s (the start, then
        zeros) until the client leaves — noticed at once, it reads EOF."""
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        gone = asyncio.ensure_future(reader.read(64))
        deadline = time.monotonic() + DRIP_FOR_S
        try:
            for index in range(length):
                if time.monotonic() > deadline:
                    return
                done, _ = await asyncio.wait([gone], timeout=self.drip)
                if done:
                    return
                writer.write(start[index:index + 1] or b"\0")
                await writer.drain()
                with self._lock:
                    self.sent += 1
        finally:
            gone.cancel()

    async def _chunked(self, writer, start, fill, limit):
        """A chunked body of `start` then `fill`, as fast as the client
        reads, up to `limit` bytes or until it leaves."""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        block = fill * (64 << 10)
        first = start + block[len(start):]
        chunk = b"%x\r\n%s\r\n" % (len(block), block)
        sent = 0
        while sent < limit:
            writer.write(chunk if sent else b"%x\r\n%s\r\n" % (len(first), first))
            await writer.drain()
            sent += len(block)
            with self._lock:
                self.sent += len(block)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
