"""The stand-in's side of one HTTP/1.1 connection (harness.loadgen.standin): requests parsed,
responses written with the bytes uvicorn writes (its head, one chunk per write), so the client
under test reads what it would read from vLLM or WarmServe."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import TYPE_CHECKING

import gevent.socket

from harness.loadgen.standin_wire import INTERNAL_ERROR

if TYPE_CHECKING:
    from harness.loadgen.standin import Behaviour


class ServerConn:
    """One keep-alive HTTP/1.1 connection: parse requests, write chunked responses."""

    def __init__(self, sock: gevent.socket.socket, behaviour: Behaviour) -> None:
        self.sock, self.b, self.buf = sock, behaviour, b""
        self.headers: dict[str, str] = {}  # of the last request read, names lower-cased

    def read_request(self) -> tuple[str, str, bytes, str] | None:
        """(method, path, body, X-Request-Id or ''), or None when the client closed."""
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length, request_id = 0, ""
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            self.headers[name] = value.strip()
            if name == "content-length":
                length = int(value.strip())
            elif name == "x-request-id":
                request_id = value.strip()
        while len(self.buf) < length:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        body, self.buf = self.buf[:length], self.buf[length:]
        return method, path, body, request_id

    def write(self, data: bytes) -> None:
        """One plain non-blocking send (no gevent wrapper: this runs tens of thousands of times a
        second); only a full socket buffer falls back to gevent's cooperative sendall."""
        try:
            sent = self.sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def _head(self, status: int, headers: str) -> bytes:
        """uvicorn's response head: its own `date` and `server` first, names lower-case."""
        return (f"HTTP/1.1 {status} {_REASONS[status]}\r\ndate: {_http_date()}\r\nserver: uvicorn\r\n"
                f"{headers}\r\n").encode()

    def respond(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """A whole body: the head, then the body, as uvicorn writes them (two writes)."""
        self.write(self._head(status, f"content-length: {len(body)}\r\ncontent-type: {content_type}\r\n"))
        self.write(body)

    def crash(self) -> None:
        """What a FastAPI app under uvicorn sends when the handler raises: Starlette's text/plain
        500; the caller then closes the connection, as uvicorn does."""
        self.respond(500, INTERNAL_ERROR, "text/plain; charset=utf-8")

    def start_stream(self, content_type: str = "text/event-stream; charset=utf-8") -> None:
        self.write(self._head(200, f"content-type: {content_type}\r\ntransfer-encoding: chunked\r\n"))

    def chunk(self, data: bytes) -> None:
        self.write(b"%x\r\n%s\r\n" % (len(data), data))


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable Entity",
            500: "Internal Server Error"}

_DATE = [0, ""]  # (second, its HTTP date), as uvicorn caches it


def _http_date() -> str:
    now = int(time.time())
    if _DATE[0] != now:
        _DATE[0], _DATE[1] = now, formatdate(now, usegmt=True)
    return str(_DATE[1])
