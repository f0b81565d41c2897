"""One HTTP/1.1 request reader for the tests' raw socket servers (they send exact bytes back)."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


def read_request(sock: socket.socket, buf: bytes) -> tuple[RawRequest, bytes] | None:
    """The next request on `sock` (after the `buf` already read) and the bytes after it;
    None when the peer closed before a whole head arrived."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(buf) < length:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    return RawRequest(method, path, headers, buf[:length]), buf[length:]
