"""The real WarmServe and ServerlessLLM bytes (tests/live/fixtures, reconstructed from their source),
replayed through the real client: a socket server sends each fixture's response read by read, the
load generator's `send` reads it, and the record must be what a correct client records."""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.server import StreamServer

from harness.contracts.endpoint import Endpoint
from harness.loadgen.client import ClientPool, send
from harness.loadgen.http_wire import ChunkedDecoder
from tests.rawhttp import read_request

FIXTURES_DIR = Path(__file__).parent / "fixtures"
FIXTURES = sorted(FIXTURES_DIR.glob("*/*.json"))
#: Pause between two entries of `response_chunks`: each arrives as its own read.
READ_GAP_S = 0.02


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def head_bytes(fx: dict[str, Any]) -> bytes:
    lines = [f"HTTP/1.1 {fx['response_status']} {fx['response_reason']}"]
    lines += [f"{name}: {value}" for name, value in fx["response_headers"]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def body_bytes(fx: dict[str, Any]) -> bytes:
    """The response body as the client's HTTP layer delivers it (chunk framing removed)."""
    raw = "".join(fx["response_chunks"]).encode()
    headers = dict(fx["response_headers"])
    if headers.get("transfer-encoding") == "chunked":
        decoder = ChunkedDecoder()
        body = decoder.feed(raw)
        assert decoder.done and not decoder.extra
        return body
    return raw


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
def test_fixture_is_well_formed_and_cites_its_source(path: Path) -> None:
    fx = load(path)
    assert fx["system"] == path.parent.name
    assert fx["source"] and all(s["repo"] and s["commit"] and s["path"] and (s["line"] or s["quote"])
                                for s in fx["source"])
    headers = dict(fx["response_headers"])
    assert list(headers)[:2] == ["date", "server"]  # uvicorn's own headers come first
    body = body_bytes(fx)
    if "content-length" in headers:
        assert int(headers["content-length"]) == len(body)
    ctype = headers["content-type"]
    if ctype.startswith("text/"):
        assert ctype.endswith("; charset=utf-8")  # Starlette adds it to every text/ media type
    else:
        json.loads(body)  # application/json bodies are JSON
    if fx["request"]["body"] != "{nope":
        json.loads(fx["request"]["body"])


class FixtureServer:
    """Answers every request with one fixture's bytes: the head, then each entry of
    `response_chunks` as its own write, READ_GAP_S apart; records when each entry went out."""

    def __init__(self, fx: dict[str, Any]) -> None:
        self.fx = fx
        self.requests: list[tuple[str, bytes]] = []
        self.sent_s: list[float] = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def _handle(self, sock, _address) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        got = read_request(sock, b"")
        if got is None:
            return
        self.requests.append((got[0].path, got[0].body))
        sock.sendall(head_bytes(self.fx))
        for entry in self.fx["response_chunks"]:
            gevent.sleep(READ_GAP_S)
            self.sent_s.append(time.perf_counter())
            sock.sendall(entry.encode())
        if self.fx["closes_connection"]:
            sock.close()
            return
        sock.settimeout(5)
        try:
            while sock.recv(65536):  # keep-alive: hold the connection until the client lets go
                pass
        except OSError:
            pass
        sock.close()

    def stop(self) -> None:
        self.server.stop()


def replay(fx: dict[str, Any]) -> tuple[dict[str, Any], FixtureServer]:
    """Send the fixture's request with the real client against a server that answers with the
    fixture's bytes; returns the record and the server."""
    server = FixtureServer(fx)
    body = json.loads(fx["request"]["body"])
    output_tokens = int(body.get("max_tokens") or 16)
    ep = Endpoint(url=server.url, protocol=fx["system"], served_name=str(body.get("model", "")))
    pool = ClientPool(timeout_s=10, connect_timeout_s=5, max_connections=2)
    record: dict[str, Any] = {"request_id": 1, "model": ep.served_name, "input_tokens": 8,
                              "output_tokens": output_tokens, "scheduled_s": time.perf_counter(),
                              "sent_s": time.perf_counter()}
    try:
        send(pool, ep, record, time.perf_counter, seed=0, timeout_s=10,
             prepared=(fx["request"]["path"], fx["request"]["body"].encode()))
    finally:
        pool.close()
        server.stop()
    return record, server


def _replayable() -> list:
    """Fixtures with an `expect`. Before the client change of issue 17 (458e6ca) five of them
    failed: serverlessllm/{engine_not_running,instance_stopped,stream_key}_200 were recorded ok with
    0 tokens, warmserve/stream_text_like_trailer_first took its first token from the second read,
    and warmserve/stream_trailer_split counted 13 token events for 12 tokens."""
    return [pytest.param(p, id=fixture_id(p)) for p in FIXTURES if load(p)["expect"] is not None]


@pytest.mark.parametrize("path", _replayable())
def test_the_client_records_the_real_bytes_as_the_real_server_meant_them(path: Path) -> None:
    fx = load(path)
    expect = fx["expect"]
    record, server = replay(fx)
    assert server.requests == [(fx["request"]["path"], fx["request"]["body"].encode())]
    assert record["status"] == expect["status"], record.get("error")
    if expect["status"] == "ok":
        assert not record.get("error")
    if "error_contains" in expect:
        assert expect["error_contains"] in (record.get("error") or ""), record.get("error")
    for key in ("received_tokens", "streamed_tokens", "claimed_tokens", "server_input_tokens"):
        if key in expect:
            assert record[key] == expect[key], (key, record[key])
    if "first_token_read" in expect:
        first = record["first_token_s"]
        i = expect["first_token_read"]
        if i is None:
            assert math.isnan(first)
        else:
            assert first >= server.sent_s[i]
            if i + 1 < len(server.sent_s):
                assert first < server.sent_s[i + 1], "the first token was taken from a later read"
