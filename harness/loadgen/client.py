"""Send one request and time it: first token, every later token, end; faults become records.

Built on geventhttpclient (what locust's FastHttpUser uses). The body is read as soon as any
bytes arrive and split on `\\n` ourselves: geventhttpclient's `readline` waits for `\\r\\n`,
which an SSE stream never sends, and it spins on a connection closed mid-body.
"""

from __future__ import annotations

import errno
import math
import socket
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import gevent
import numpy as np
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPConnectionClosed, HTTPSocketPoolResponse

from harness.loadgen.protocols import Endpoint, StreamReader, build_request

NAN = math.nan


class StreamCut(Exception):
    """The server closed the connection before the response ended."""


class ClientPool:
    """One keep-alive HTTP client per base URL, sized for open-loop load."""

    def __init__(self, timeout_s: float, connect_timeout_s: float, max_connections: int) -> None:
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.max_connections = max_connections
        self._clients: dict[str, HTTPClient] = {}

    def get(self, url: str) -> HTTPClient:
        client = self._clients.get(url)
        if client is None:
            parts = urlsplit(url)
            client = HTTPClient(parts.hostname, parts.port, concurrency=self.max_connections,
                                connection_timeout=self.connect_timeout_s,
                                # No per-read socket timeout: a gevent Timeout per recv costs
                                # more than the read; `send` bounds the whole request instead.
                                network_timeout=None, ssl=parts.scheme == "https",
                                headers={"Content-Type": "application/json"})
            # Resolve once: gevent's resolver costs ~40 ms per new connection on a busy host.
            conn_pool = client._connection_pool
            conn_pool.after_connect = _no_delay
            addresses = conn_pool._resolve()
            conn_pool._resolve = lambda: addresses
            self._clients[url] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def _no_delay(sock) -> None:
    """Send small writes at once (no Nagle)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _read_some(resp: HTTPSocketPoolResponse) -> bytes:
    """Body bytes as soon as any arrive; b'' once the message is complete."""
    while True:
        buf = resp._body_buffer
        if buf:
            data = bytes(buf)
            del buf[:]
            return data
        if resp.message_complete:
            return b""
        sock = resp._sock
        if sock is None:
            raise StreamCut("connection closed mid-response")
        data = sock.recv(65536)
        if not data:
            raise StreamCut("connection closed by the server mid-response")
        resp.feed(data)


def _discard(resp: HTTPSocketPoolResponse | None) -> None:
    """Close the connection of a response not read to its end: it must never go back to the pool."""
    if resp is None:
        return
    pool, sock = resp._pool, resp._sock
    resp._pool = resp._sock = None
    if pool is not None and sock is not None:
        pool.release_socket(sock)


def _describe(exc: BaseException) -> tuple[str, str]:
    """(status, error text) for a failed request."""
    if isinstance(exc, (gevent.Timeout, socket.timeout, TimeoutError)):
        return "timeout", f"timeout: {exc or 'no answer in time'}"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return "error", "connection refused"
    if isinstance(exc, StreamCut):
        return "error", f"stream cut: {exc}"
    if isinstance(exc, HTTPConnectionClosed):
        return "error", "connection closed by the server before the response"
    return "error", f"{type(exc).__name__}: {exc}"[:300]


def send(pool: ClientPool, ep: Endpoint, record: dict[str, Any], now: Callable[[], float],
         seed: int, timeout_s: float) -> None:
    """Fill `record` (which has request_id, input/output tokens, sent_s) by sending it once."""
    path, body = build_request(ep, record["request_id"], record["input_tokens"],
                               record["output_tokens"], seed)
    reader = StreamReader(ep.protocol)
    token_times: list[float] = []
    resp = None
    try:
        with gevent.Timeout(timeout_s):
            # The id on the wire (as `vllm bench serve` sends it) lets a server's own log be
            # matched to this record.
            resp = pool.get(ep.url).request("POST", path, body=body,
                                            headers={"X-Request-Id": str(record["request_id"])})
            if resp.status_code != 200:
                text = resp.read()[:300].decode("utf-8", "replace")
                record["end_s"] = now()
                record["status"], record["error"] = "error", f"HTTP {resp.status_code}: {text}"
                return
            while True:
                data = _read_some(resp)
                if not data:
                    break
                t = now()
                events = reader.feed(data)
                token_times.extend([t] * events)  # tokens read together share a time
            reader.finish()
        record["end_s"] = now()
        if reader.error:
            record["status"], record["error"] = "error", reader.error
        else:
            record["status"] = "ok"
    except gevent.GreenletExit:
        record["status"], record["error"] = "cancelled", "cancelled: drain time ran out after stop"
        record["end_s"] = now()
        _discard(resp)
    except BaseException as exc:  # noqa: BLE001 - every fault becomes a record
        record["end_s"] = now()
        record["status"], record["error"] = _describe(exc)
        _discard(resp)
    finally:
        _fill_tokens(record, reader, token_times, ep)


def _fill_tokens(record: dict[str, Any], reader: StreamReader, token_times: list[float],
                 ep: Endpoint) -> None:
    if ep.protocol == "serverlessllm":
        record["first_token_s"] = NAN  # no stream: the first token's time is not observable
        record["itl_s"] = []
    else:
        record["first_token_s"] = token_times[0] if token_times else NAN
        record["itl_s"] = np.diff(token_times).round(6).tolist() if len(token_times) > 1 else []
    if reader.usage_tokens is not None:
        record["received_tokens"] = int(reader.usage_tokens)
    else:
        record["received_tokens"] = len(token_times)
    record["server_input_tokens"] = reader.prompt_tokens


def wall_to_perf(epoch_s: float) -> float:
    """A wall-clock instant expressed on this process's perf_counter scale."""
    return time.perf_counter() + (epoch_s - time.time())
