"""Send one request and time it: first token, every later token, end; faults become records.

The request goes through `harness.loadgen.http` (a small HTTP/1.1 client on gevent sockets):
the streamed body is read from the event loop as soon as any bytes arrive, and every read is
timed; tokens read together share a time.
"""

from __future__ import annotations

import errno
import math
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import gevent
import numpy as np

from harness.contracts.endpoint import Endpoint
from harness.contracts.redact import redact_text
from harness.loadgen.bodies import build_request, wire_lengths
from harness.loadgen.http import ClosedBeforeResponse, Exchange, StreamCut
from harness.loadgen.http_pool import Pool
from harness.loadgen.http_wire import ProtocolError
from harness.loadgen.protocols import StreamReader, trusted_tokens

NAN = math.nan

__all__ = ["ClientPool", "StreamCut", "send", "wall_to_perf"]


class ClientPool:
    """One keep-alive connection pool per base URL, sized for open-loop load."""

    def __init__(self, timeout_s: float, connect_timeout_s: float, max_connections: int) -> None:
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.max_connections = max_connections
        self._pools: dict[str, Pool] = {}

    def get(self, url: str) -> Pool:
        pool = self._pools.get(url)
        if pool is None:
            parts = urlsplit(url)
            tls = parts.scheme == "https"
            pool = Pool(parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls,
                        self.connect_timeout_s, self.max_connections)
            self._pools[url] = pool
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _describe(exc: BaseException) -> tuple[str, str]:
    """(status, error text) for a failed request."""
    if isinstance(exc, (gevent.Timeout, socket.timeout, TimeoutError)):
        return "timeout", f"timeout: {exc or 'no answer in time'}"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return "error", "connection refused"
    if isinstance(exc, StreamCut):
        return "error", f"stream cut: {exc}"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "error", f"stream cut: connection reset by the server ({type(exc).__name__})"
    if isinstance(exc, ClosedBeforeResponse):
        return "error", str(exc)
    if isinstance(exc, ProtocolError):
        return "error", f"bad HTTP from the server: {exc}"[:300]
    return "error", f"{type(exc).__name__}: {exc}"[:300]


def send(pool: ClientPool, ep: Endpoint, record: dict[str, Any], now: Callable[[], float],
         seed: int, timeout_s: float, prepared: tuple[str, bytes] | None = None) -> None:
    """Fill `record` (which has request_id, input/output tokens, sent_s) by sending it once;
    `prepared` is (path, body) already built for `ep`. `sent_input_tokens` / `sent_output_tokens`
    record the lengths asked of the server after its caps (protocols.wire_lengths)."""
    try:
        record["sent_input_tokens"], record["sent_output_tokens"] = wire_lengths(
            ep, record["input_tokens"], record["output_tokens"])
        path, body = prepared or build_request(ep, record["request_id"], record["input_tokens"],
                                               record["output_tokens"], seed)
    except Exception as exc:  # noqa: BLE001 - e.g. a token count no body can hold: a record, not a crash
        record["end_s"] = now()
        record["status"], record["error"] = "error", f"request not built: {type(exc).__name__}: {exc}"[:300]
        _fill_tokens(record, StreamReader(ep.protocol), [], ep)
        return
    reader = StreamReader(ep.protocol)
    token_times: list[float] = []
    exchange = Exchange(pool.get(ep.url), now)
    framed = ep.protocol == "warmserve"  # raw text: the HTTP chunks delimit its messages

    def on_body(data: bytes, t: float) -> bool:
        events = reader.feed_framed(data, exchange.decoder) if framed else reader.feed(data)
        if events == 1:
            token_times.append(t)
        elif events:
            token_times.extend([t] * events)  # tokens read together share a time
        return bool(token_times)  # the rest of the stream may wait behind due sends

    try:
        with gevent.Timeout(timeout_s):
            # The id on the wire (as `vllm bench serve` sends it) lets a server's own log be
            # matched to this record.
            headers = {"Content-Type": "application/json",
                       "X-Request-Id": str(int(ep.id_offset) + int(record["request_id"]))}
            headers.update(ep.headers)  # (name, value) pairs: no throwaway dict per request
            head = exchange.request("POST", path, body, headers)
            if head.status != 200:
                text = redact_text(exchange.read_all()[:300].decode("utf-8", "replace"))
                record["end_s"] = now()
                record["status"], record["error"] = "error", f"HTTP {head.status}: {text}"
                return
            exchange.read_body(on_body)
            reader.finish()
        record["end_s"] = now()
        if reader.error:
            record["status"], record["error"] = "error", reader.error
        else:
            record["status"] = "ok"
    except gevent.GreenletExit:
        record["status"], record["error"] = "cancelled", "cancelled: drain time ran out after stop"
        record["end_s"] = now()
    except BaseException as exc:  # noqa: BLE001 - every fault becomes a record
        record["end_s"] = now()
        status, error = _describe(exc)
        record["status"], record["error"] = status, redact_text(error)
    finally:
        exchange.finish()  # a connection not read to its end is closed, never reused
        _fill_tokens(record, reader, token_times, ep)


def _fill_tokens(record: dict[str, Any], reader: StreamReader, token_times: list[float],
                 ep: Endpoint) -> None:
    """Token times and counts. A streamed count contradicting the server's claim (see
    protocols.trusted_tokens) is flagged `tokens_mismatch` and the streamed count is kept in
    `received_tokens` (what TPOT divides by); the claim stays in `claimed_tokens`."""
    claimed = reader.usage_tokens
    record["claimed_tokens"] = claimed
    record["bad_events"] = reader.bad_events
    if ep.protocol == "serverlessllm":
        record["first_token_s"] = NAN  # no stream: the first token's time is not observable
        record["itl_s"] = []
        record["streamed_tokens"] = None
        record["received_tokens"] = int(claimed) if claimed is not None else 0
        record["tokens_mismatch"] = False
    else:
        if reader.retracted:  # reads that held only WarmServe's trailer were no tokens
            token_times = token_times[:len(token_times) - reader.retracted]
        record["first_token_s"] = token_times[0] if token_times else NAN
        record["itl_s"] = np.diff(token_times).round(6).tolist() if len(token_times) > 1 else []
        record["streamed_tokens"] = len(token_times)
        asked = record.get("sent_output_tokens") or record["output_tokens"]
        record["received_tokens"], record["tokens_mismatch"] = trusted_tokens(
            len(token_times), claimed, int(asked))
    record["server_input_tokens"] = reader.prompt_tokens


def wall_to_perf(epoch_s: float) -> float:
    """A wall-clock instant expressed on this process's perf_counter scale."""
    return time.perf_counter() + (epoch_s - time.time())
