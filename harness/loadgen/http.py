"""A small HTTP/1.1 client for the load generator's hot path: streamed response bodies.

Why not geventhttpclient for the body: its llhttp parser calls back into Python for every chunk
and each read first tries `recv`, fails with EAGAIN, then parks the greenlet; with one chunk
per token that cost ~30 µs of CPU per token, a whole core at 200 req/s x 128 tokens. Here the
request greenlet sends the request and reads the response head; a streamed body is then read
from the event loop itself: one io watcher per connection calls `_readable` when bytes arrive,
which reads them with one non-blocking `recv`, takes the time, and decodes the chunked framing
incrementally. No greenlet switch per token, no parser callbacks, no sleeping between reads:
bytes are read as soon as the loop sees them, and bytes read together share a time.

Plain TCP only on that path; `https` endpoints read through gevent's SSL socket in the request
greenlet (same framing code, slower).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event

from harness.loadgen.http_pool import RECV_BYTES, Connection, Pool
from harness.loadgen.http_wire import ChunkedDecoder, Head, ProtocolError, parse_head

MAX_HEAD_BYTES = 65536


class StreamCut(Exception):
    """The server closed the connection before the response ended."""


class ClosedBeforeResponse(Exception):
    """The server closed the connection before any byte of a response."""


class _Enough(Exception):
    """Raised from a body callback to stop reading a body (read_all's limit)."""


OnBody = Callable[[bytes, float], "bool | None"]

# libev runs the watchers that became ready in one loop iteration highest priority first. A
# stream's later tokens are read at BULK_PRIORITY, after sends that are due and first tokens
# (default priority 0): at 200 req/s x 128 tokens one iteration can hold ~100 token reads, and
# a due send or a first token queued behind them would be late by the whole batch.
BULK_PRIORITY = -1
# Bulk reads stop for the iteration once it has run this long (at least one read each): the
# sockets stay readable (level-triggered), so the next iteration, which starts with whatever
# became due or arrived meanwhile, reads them. What arrives during a long batch no longer waits
# for all of it. Each deferred socket costs a wake-up per iteration, so once reads have been
# deferred for BULK_BACKLOG_S on end (the client cannot keep up) an iteration reads them all.
BULK_BUDGET_S = 0.0005
BULK_BACKLOG_S = 0.02


def sleep_at_priority(delay_s: float, priority: int) -> None:
    """gevent.sleep on a timer of libev `priority` (-2..2): of the watchers ready in one loop
    iteration, higher priorities run first."""
    hub = gevent.get_hub()
    timer = hub.loop.timer(max(0.0, delay_s))
    timer.priority = priority
    hub.loop.update_now()  # as gevent.sleep: the timer counts from now, not the iteration's start
    try:
        hub.wait(timer)
    finally:
        timer.close()


class _Iteration:
    """When the event loop's current iteration began (a check watcher of the highest priority
    runs first among the watchers an iteration found ready) and its bulk reads so far."""

    start_s = 0.0
    bulk_reads = 0
    deferred = False  # this iteration left bulk reads for the next
    caught_up_s = 0.0  # when an iteration last began with nothing deferred before it
    loop: Any = None

    @staticmethod
    def began() -> None:
        now = time.perf_counter()
        if not _Iteration.deferred:
            _Iteration.caught_up_s = now
        _Iteration.start_s, _Iteration.bulk_reads, _Iteration.deferred = now, 0, False

    @staticmethod
    def ensure() -> None:
        loop = gevent.get_hub().loop
        if _Iteration.loop is not loop:  # first use, or a new hub
            watcher = loop.check(ref=False)  # never what keeps the loop alive
            watcher.priority = 2  # libev's EV_MAXPRI
            watcher.start(_Iteration.began)
            _Iteration.loop = loop

    @staticmethod
    def may_read_bulk() -> bool:
        now = time.perf_counter()
        elapsed = now - _Iteration.start_s
        if (_Iteration.bulk_reads and BULK_BUDGET_S < elapsed < 0.05  # older: a stale start, read
                and now - _Iteration.caught_up_s < BULK_BACKLOG_S):
            _Iteration.deferred = True
            return False
        _Iteration.bulk_reads += 1
        return True


class Exchange:
    """One request and its response on a connection taken from a pool.

    `request` sends and reads the head; `read_body` delivers body bytes to `on_body(data,
    read_time)` as they arrive and returns when the body has ended; once `on_body` returns True
    (it has seen the first token) the rest is read at BULK_PRIORITY. `finish` gives the
    connection back (reusable only after a complete body).
    """

    def __init__(self, pool: Pool, now: Callable[[], float]) -> None:
        self.pool, self.now = pool, now
        self.conn: Connection | None = None
        self.head: Head | None = None
        self._rest = b""  # body bytes read with the head
        self._rest_s = 0.0
        self._complete = False
        #: The chunked body's decoder while read_body runs (None: not chunked).
        self.decoder: ChunkedDecoder | None = None

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Head:
        self.conn = self.pool.acquire()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.pool.host}:{self.pool.port}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        buf = b""
        while True:
            try:
                data = self.conn.recv()
            except ConnectionResetError:
                if buf:
                    raise
                raise ClosedBeforeResponse("connection reset by the server before the response") from None
            if not data:
                if buf:
                    raise StreamCut("connection closed in the response head")
                raise ClosedBeforeResponse("connection closed by the server before the response")
            t = self.now()
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD_BYTES:
                raise ProtocolError("response head too long")
        self.head = parse_head(buf[:end])
        self._rest, self._rest_s = buf[end + 4:], t
        if 100 <= self.head.status < 200:
            raise ProtocolError(f"unexpected interim response {self.head.status}")
        return self.head

    def read_body(self, on_body: OnBody) -> None:
        """Deliver the body; raises StreamCut if the connection ends before it does."""
        assert self.conn is not None and self.head is not None
        headers = self.head.headers
        if self.head.status in (204, 304):
            self._complete = True
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.decoder = ChunkedDecoder()  # on_body may read its framing counts
            reader = _BodyReader(self.conn, self.now, on_body, self.decoder, None)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
            reader = _BodyReader(self.conn, self.now, on_body, None, length)
        else:
            reader = _BodyReader(self.conn, self.now, on_body, None, None)  # until the server closes
        reader.run(self._rest, self._rest_s)
        self._complete = reader.complete and reader.reusable and self.head.keep_alive

    def read_all(self, limit_bytes: int = 65536) -> bytes:
        """The body of a short non-streamed answer (an error), at most `limit_bytes` of it: an
        endless error body must not fill the client's memory (the connection is then dropped)."""
        parts: list[bytes] = []
        size = 0

        def keep(data: bytes, _t: float) -> None:
            nonlocal size
            parts.append(data)
            size += len(data)
            if size >= limit_bytes:
                raise _Enough

        try:
            self.read_body(keep)
        except _Enough:
            self._complete = False
        return b"".join(parts)[:limit_bytes]

    def finish(self) -> None:
        if self.conn is not None:
            self.pool.release(self.conn, reusable=self._complete)
            self.conn = None


class _BodyReader:
    """Reads one body. Plain TCP: from an io watcher's callback in the event loop (no greenlet
    switch per read); the request greenlet only waits for the end. TLS: a loop in the greenlet."""

    __slots__ = ("conn", "now", "on_body", "chunked", "left", "complete", "reusable", "error", "ended",
                 "bulk")

    def __init__(self, conn: Connection, now: Callable[[], float], on_body: OnBody,
                 chunked: ChunkedDecoder | None, length: int | None) -> None:
        self.conn, self.now, self.on_body = conn, now, on_body
        self.chunked, self.left = chunked, length  # left: None = until the server closes
        self.complete = False
        self.reusable = length is not None or chunked is not None
        self.error: BaseException | None = None
        self.ended: Event | None = None
        self.bulk = False  # on_body has seen the first token

    def _deliver(self, data: bytes, t: float) -> None:
        if self.on_body(data, t) and not self.bulk:
            self.bulk = True
            watcher = self.conn._rw
            if watcher is not None and watcher.active:  # libev: set priority only when stopped
                watcher.stop()
                watcher.priority = BULK_PRIORITY
                watcher.start(self._readable)

    def _consume(self, data: bytes, t: float) -> bool:
        """Handle bytes read at `t`; True when the body has ended."""
        if self.chunked is not None:
            payload = self.chunked.feed(data)
            if payload:
                self._deliver(payload, t)
            if self.chunked.done:
                self.complete = True
                self.reusable = not self.chunked.extra  # stray bytes: never reuse
                return True
            return False
        if self.left is None:
            self._deliver(data, t)
            return False
        if len(data) > self.left:
            self.reusable = False
            data = data[:self.left]
        self.left -= len(data)
        if data:
            self._deliver(data, t)
        if self.left == 0:
            self.complete = True
            return True
        return False

    def _eof(self) -> None:
        if self.left is None and self.chunked is None:
            self.complete = True  # the body ends with the connection
        else:
            raise StreamCut("connection closed by the server mid-response")

    def run(self, rest: bytes, rest_s: float) -> None:
        if (rest and self._consume(rest, rest_s)) or self.left == 0:
            self.complete = True
            return
        if self.conn.tls:
            while True:
                data = self.conn.recv()
                if not data:
                    self._eof()
                    return
                if self._consume(data, self.now()):
                    return
        self.ended = Event()
        _Iteration.ensure()
        watcher = self.conn._rw
        assert watcher is not None  # plain TCP: the connection made its read watcher
        watcher.priority = BULK_PRIORITY if self.bulk else 0
        watcher.start(self._readable)
        try:
            self.ended.wait()
        finally:
            watcher.stop()
            watcher.priority = 0  # the connection's next request reads its head at the default
        if self.error is not None:
            raise self.error

    def _readable(self) -> None:
        """io watcher callback, run by the event loop: must never raise or block."""
        if self.bulk and not _Iteration.may_read_bulk():
            return  # still readable: the next iteration reads it, after what is more urgent
        try:
            data = self.conn.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the request greenlet
            self._end(exc)
            return
        try:
            if not data:
                self._eof()
                self._end(None)
            elif self._consume(data, self.now()):
                self._end(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the request greenlet
            self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        if self.conn._rw is not None:  # always on plain TCP, the only path that reaches here
            self.conn._rw.stop()
        self.error = exc
        if self.ended is not None:
            self.ended.set()
