"""HTTP/1.1 response framing as pure functions of bytes (no sockets): the response head and the
chunked transfer coding, shared by the client (harness.loadgen.http) and the protocol readers
that count a chunked body's framing (harness.loadgen.protocols)."""

from __future__ import annotations


class ProtocolError(Exception):
    """The server's bytes are not valid HTTP/1.1."""


class ChunkedDecoder:
    """Incremental decoder of `Transfer-Encoding: chunked`, cheap when reads hold whole chunks.

    `feed` returns the payload bytes the data completes (possibly b''); `done` is set once the
    last chunk and its trailer have been read; bytes after that are kept in `extra`. The framing
    stays countable: `ended` chunks have been read whole so far, the last of `last_size` bytes,
    and `partial` says a chunk's payload has begun but not ended (a server that writes one chunk
    per message, as uvicorn writes one per yielded string, is read message by message).
    """

    __slots__ = ("_pending", "_left", "_size", "_crlf", "_trailer", "done", "extra", "ended", "last_size")

    def __init__(self) -> None:
        self._pending = b""
        self._left = 0  # payload bytes still to come in the current chunk
        self._size = 0  # the current chunk's payload size
        self._crlf = False  # the CRLF after a chunk's payload is still to come
        self._trailer = False  # after the last (empty) chunk: trailer lines until an empty one
        self.done = False
        self.extra = b""
        self.ended = 0
        self.last_size = 0

    @property
    def partial(self) -> bool:
        """Some, not all, of the current chunk's payload has been read."""
        return 0 < self._left < self._size

    def feed(self, data: bytes) -> bytes:
        if not (self._pending or self._left or self._crlf or self._trailer):
            # Fast path: the read is exactly one whole chunk (one SSE event per write, as
            # servers send tokens).
            eol = data.find(b"\r\n")
            if 0 < eol <= 8:
                try:
                    size = int(data[:eol], 16)
                except ValueError:
                    size = 0  # an extension or bad digits: the general path decides
                if size > 0 and len(data) == eol + size + 4 and data.endswith(b"\r\n"):
                    self.ended += 1
                    self.last_size = size
                    return data[eol + 2:eol + 2 + size]
        elif self._pending:
            data = self._pending + data
            self._pending = b""
        out: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n:
            if self._left:
                end = pos + self._left
                if end <= n:
                    out.append(data[pos:end])
                    pos, self._left, self._crlf = end, 0, True
                    self.ended += 1
                    self.last_size = self._size
                else:
                    out.append(data[pos:])
                    self._left, pos = end - n, n
                continue
            if self._crlf:
                if n - pos < 2:
                    self._pending = data[pos:]
                    break
                if data[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos, self._crlf = pos + 2, False
                continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                if n - pos > 4096:
                    raise ProtocolError("chunk size line too long")
                self._pending = data[pos:]
                break
            line, pos = data[pos:eol], eol + 2
            if self._trailer:
                if not line:
                    self.done, self.extra = True, data[pos:]
                    break
                continue  # a trailer field: ignored
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if size < 0:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}")
            if size == 0:
                self._trailer = True
            else:
                self._left = self._size = size
        if len(out) == 1:
            return out[0]
        return b"".join(out)


class Head:
    """Status line and headers of a response (header names lower-cased)."""

    __slots__ = ("status", "reason", "version", "headers")

    def __init__(self, status: int, reason: str, version: str, headers: dict[str, str]) -> None:
        self.status, self.reason, self.version, self.headers = status, reason, version, headers

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return "close" not in conn and (self.version != "HTTP/1.0" or "keep-alive" in conn)


def parse_head(raw: bytes) -> Head:
    """Parse the bytes before the blank line that ends a response head."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return Head(int(parts[1]), parts[2] if len(parts) > 2 else "", parts[0], headers)
