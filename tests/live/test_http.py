"""The load generator's HTTP/1.1 client: chunked bodies split anywhere, several events per read,
cut streams, stale kept-alive connections, and the body read from the event loop."""

from __future__ import annotations

import shutil
import socket
import subprocess

import gevent
import gevent.ssl
import pytest
from gevent.server import StreamServer

from harness.loadgen.http import ClosedBeforeResponse, Exchange, StreamCut
from harness.loadgen.http_pool import Pool
from harness.loadgen.http_wire import ChunkedDecoder, ProtocolError
from harness.loadgen.protocols import StreamReader

EVENTS = [
    b'data: {"id":"c","choices":[{"index":0,"text":" a","finish_reason":null}]}\n\n',
    b'data: {"id":"c","choices": [ {"index":0,"text":" b","finish_reason":null}]}\n\n',
    b'data: {"id":"c","choices":[{"index":0,"text":"data: x","finish_reason":"length"}]}\n\n',
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n',
    b"data: [DONE]\n\n",
]
PAYLOAD = b"".join(EVENTS)


def chunked(parts: list[bytes], trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n" + trailer + b"\r\n"


WIRE = chunked(EVENTS)


def test_chunked_decoder_survives_any_split() -> None:
    for cut in range(1, len(WIRE)):
        dec = ChunkedDecoder()
        out = dec.feed(WIRE[:cut]) + dec.feed(WIRE[cut:])
        assert out == PAYLOAD and dec.done and dec.extra == b"", cut


def test_chunked_decoder_byte_by_byte_with_extensions_and_trailers() -> None:
    wire = b"5;name=value\r\nhello\r\n1A\r\n" + b"x" * 26 + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    dec, out = ChunkedDecoder(), b""
    for i in range(len(wire)):
        assert not dec.done
        out += dec.feed(wire[i:i + 1])
    assert out == b"hello" + b"x" * 26 and dec.done


def test_chunked_decoder_rejects_garbage() -> None:
    with pytest.raises(ProtocolError):
        ChunkedDecoder().feed(b"zz\r\nhello\r\n")
    with pytest.raises(ProtocolError):
        ChunkedDecoder().feed(b"5\r\nhelloXX")


def test_sse_counts_through_the_decoder_with_several_events_per_read() -> None:
    for step in (1, 7, 50, len(WIRE)):
        dec, reader, events = ChunkedDecoder(), StreamReader("openai"), 0
        for i in range(0, len(WIRE), step):
            events += reader.feed(dec.feed(WIRE[i:i + step]))
        reader.finish()
        # the third token's text holds "data:": still one token, counted once
        assert events == 3, step
        assert (reader.usage_tokens, reader.prompt_tokens, reader.done, reader.error) == (3, 7, True, None)


def test_sse_error_event_among_tokens_is_detected() -> None:
    reader = StreamReader("openai")
    n = reader.feed(EVENTS[0] + b'data: {"error": {"message": "engine died"}}\n\n')
    reader.finish()
    assert n == 1 and reader.error is not None and "engine died" in reader.error


def serve(handler) -> tuple[StreamServer, Pool]:
    """A raw TCP server in this process whose `handler(sock)` writes whatever bytes it likes."""

    def handle(sock, _addr) -> None:
        try:
            handler(sock)
        finally:
            sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server, Pool("127.0.0.1", server.server_port, False, 2.0, 16)


def read_request(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    return data


def exchange(pool: Pool, times: list[float] | None = None) -> tuple[int, bytes]:
    clock = iter(range(1000))
    ex = Exchange(pool, lambda: float(next(clock)))
    parts: list[bytes] = []
    try:
        head = ex.request("POST", "/v1/completions", b"{}", {"X-Request-Id": "1"})
        ex.read_body(lambda data, t: (parts.append(data), times is not None and times.append(t)))
        return head.status, b"".join(parts)
    finally:
        ex.finish()


def test_streamed_body_is_read_as_it_arrives_each_read_timed() -> None:
    def handler(sock) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in EVENTS:
            gevent.sleep(0.01)
            sock.sendall(b"%x\r\n%s\r\n" % (len(event), event))
        sock.sendall(b"0\r\n\r\n")
        gevent.sleep(0.2)

    server, pool = serve(handler)
    try:
        times: list[float] = []
        status, body = exchange(pool, times)
        assert status == 200 and body == PAYLOAD
        assert len(times) == len(EVENTS) and times == sorted(set(times))  # one read per event
        assert len(pool._idle) == 1  # complete body: the connection is kept
    finally:
        server.stop()


def test_a_cut_stream_raises_and_its_connection_is_not_kept() -> None:
    def handler(sock) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + WIRE[:60])

    server, pool = serve(handler)
    try:
        with pytest.raises(StreamCut):
            exchange(pool)
        assert pool._idle == []
    finally:
        server.stop()


def test_content_length_body_and_a_close_before_any_response() -> None:
    def handler(sock) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom")
        read_request(sock)  # the next request on the kept-alive connection: closed unanswered

    server, pool = serve(handler)
    try:
        assert exchange(pool) == (500, b"boom")
        with pytest.raises(ClosedBeforeResponse):
            exchange(pool)
    finally:
        server.stop()


def test_a_kept_alive_connection_closed_by_the_server_is_not_reused() -> None:
    def handler(sock) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        # then close, as servers do with idle keep-alive connections

    server, pool = serve(handler)
    try:
        assert exchange(pool) == (200, b"ok")
        gevent.sleep(0.05)
        assert exchange(pool) == (200, b"ok")  # a fresh connection, not the closed one
    finally:
        server.stop()


def test_connection_refused_is_raised_as_such() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        exchange(Pool("127.0.0.1", port, False, 2.0, 4))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https_endpoint_streams_through_tls(tmp_path, monkeypatch) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust it as the default context's CA
    context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)  # cooperative, unlike the stdlib's
    context.load_cert_chain(cert, key)

    def handle(sock, _addr) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(WIRE), 40):
            sock.sendall(WIRE[i:i + 40])
            gevent.sleep(0.002)
        gevent.sleep(0.1)
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle, ssl_context=context)
    server.start()
    try:
        assert exchange(Pool("127.0.0.1", server.server_port, True, 2.0, 4)) == (200, PAYLOAD)
    finally:
        server.stop()


def test_after_its_first_token_a_stream_is_read_below_due_sends() -> None:
    # libev runs higher priorities first in an iteration: the rest of a stream must not be
    # read before sends that fall due or other streams' first tokens; the next request on the
    # kept-alive connection reads its head at the default priority again.
    from harness.loadgen.http import BULK_PRIORITY

    def handler(sock) -> None:
        for _ in range(2):
            read_request(sock)
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for event in EVENTS:
                gevent.sleep(0.01)
                sock.sendall(b"%x\r\n%s\r\n" % (len(event), event))
            sock.sendall(b"0\r\n\r\n")
        gevent.sleep(0.2)

    server, pool = serve(handler)
    try:
        for _ in range(2):
            priorities: list[int] = []
            ex = Exchange(pool, lambda: 0.0)
            ex.request("POST", "/v1/completions", b"{}", {})
            watcher = ex.conn._rw
            assert watcher.priority == 0
            ex.read_body(lambda data, t, seen=priorities, w=watcher: (seen.append(w.priority), True)[1])
            ex.finish()
            assert priorities[0] == 0 and set(priorities[1:]) == {BULK_PRIORITY}
            assert watcher.priority == 0
        assert len(pool._idle) == 1  # one connection served both
    finally:
        server.stop()


def test_bulk_reads_yield_once_the_iteration_ran_past_its_budget_but_never_stall() -> None:
    import time

    from harness.loadgen.http import BULK_BACKLOG_S, BULK_BUDGET_S, _Iteration

    _Iteration.deferred = False
    _Iteration.began()
    assert _Iteration.may_read_bulk()  # the first bulk read of an iteration always happens
    _Iteration.start_s = time.perf_counter() - 2 * BULK_BUDGET_S
    assert not _Iteration.may_read_bulk()  # over budget: left for the next iteration
    _Iteration.start_s = time.perf_counter() - 1.0
    assert _Iteration.may_read_bulk()  # a start that old is stale (no check watcher ran): read
    # deferred on end for longer than the backlog bound: the client is behind, read everything
    _Iteration.began()
    assert _Iteration.bulk_reads == 0 and _Iteration.may_read_bulk()
    _Iteration.start_s = time.perf_counter() - 2 * BULK_BUDGET_S
    assert not _Iteration.may_read_bulk() and _Iteration.deferred
    _Iteration.began()  # follows a deferring iteration: still behind since caught_up_s
    _Iteration.caught_up_s -= 2 * BULK_BACKLOG_S
    _Iteration.may_read_bulk()
    _Iteration.start_s = time.perf_counter() - 2 * BULK_BUDGET_S
    assert _Iteration.may_read_bulk()
