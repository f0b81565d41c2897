"""A small streaming server for the load generator's benchmark and contract tests.

It speaks four real wire formats: OpenAI completions and chat completions with SSE streaming
(as vLLM serves them; chat opens with a role-only event), the WarmServe PrewarmManager
endpoint (`POST /`, raw text chunks then `#<completion tokens>`), and ServerlessLLM's
non-streaming OpenAI chat API. Each request waits `ttft_s`, then emits one
token every `gap_s`. Faults can be injected per model name: HTTP 500, a stream cut mid-way,
or a hang; `--no-token-ids` and `--strict` make it refuse token-id prompts or vLLM's extra
fields, as other servers do; `--vocab-size N` refuses token ids >= N (HTTP 400, as vLLM does);
`--require-header NAME=VALUE` answers 401 to any request without that header (an API key; as
with vLLM's `--api-key`, `/health` stays open). Run it as `python -m harness.loadgen.standin --port P
[--ttft-ms T] [--gap-ms G] [--log FILE]`.

The nominal TTFT is only what the server aims for: on a busy host its timers fire late. With
`--log FILE` it appends one JSON line per streamed request, written when the first token goes
out: `{"request_id", "received_s", "first_token_s"}` with the request id it was sent
(`X-Request-Id` header, or the WarmServe body's `id`) and both instants on `time.perf_counter()`
(CLOCK_MONOTONIC on Linux, shared by every process of the host), so the benchmark can tell the
server's lateness from the client's own timing error.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from dataclasses import dataclass, field
from typing import IO

import gevent
from gevent.event import AsyncResult as Event
from gevent.server import StreamServer

from harness.loadgen.http import sleep_at_priority


@dataclass
class Behaviour:
    """What the server does; fault sets hold model names."""

    ttft_s: float = 0.02
    gap_s: float = 0.005
    error_models: set[str] = field(default_factory=set)
    cut_models: set[str] = field(default_factory=set)
    hang_models: set[str] = field(default_factory=set)
    accept_token_ids: bool = True
    strict: bool = False  # refuse fields the OpenAI API does not define (vLLM's ignore_eos, ...)
    served: dict[str, int] = field(default_factory=dict)  # requests per model, for /metrics
    log: IO[str] | None = None  # first-token log (see the module docstring), line-buffered
    vocab_size: int | None = None  # token ids at or above it are refused (HTTP 400)
    required_headers: dict[str, str] = field(default_factory=dict)  # lower-case name -> value

    def log_first_token(self, request_id: str, received_s: float, first_token_s: float) -> None:
        """One line per streamed request: when it arrived and when its first token was written."""
        if self.log is not None:
            self.log.write('{"request_id":%s,"received_s":%.7f,"first_token_s":%.7f}\n'
                           % (json.dumps(request_id), received_s, first_token_s))


def _count_prompt_tokens(prompt: object) -> int:
    if isinstance(prompt, list):
        if prompt and isinstance(prompt[0], dict):  # chat messages
            return sum(len(str(m.get("content", "")).split()) for m in prompt)
        return len(prompt)
    return len(str(prompt).split())


class _Conn:
    """One keep-alive HTTP/1.1 connection: parse requests, write chunked responses."""

    def __init__(self, sock, behaviour: Behaviour) -> None:
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

    def respond(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  500: "Internal Server Error"}[status]
        self.sock.sendall(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def start_stream(self, content_type: str = "text/event-stream") -> None:
        self.sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n".encode())

    def chunk(self, data: bytes) -> None:
        self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self.sock.sendall(b"0\r\n\r\n")


def _metrics_text(b: Behaviour) -> bytes:
    lines = ["# HELP standin_requests_total Requests served per model.",
             "# TYPE standin_requests_total counter"]
    lines += [f'standin_requests_total{{model_name="{m}"}} {n}' for m, n in sorted(b.served.items())]
    return ("\n".join(lines) + "\n").encode()


def handle(sock, _address, behaviour: Behaviour) -> None:
    """Serve one connection until the client closes it (or a fault cuts it)."""
    # Like uvicorn / asyncio (what vLLM runs on): no Nagle, or a token written right after the
    # response head waits for the client's delayed ACK (tens of ms of false TTFT).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = _Conn(sock, behaviour)
    try:
        while True:
            req = conn.read_request()
            if req is None:
                return
            received = time.perf_counter()
            method, path, body, request_id = req
            if path != "/health" and any(conn.headers.get(k) != v for k, v in behaviour.required_headers.items()):
                conn.respond(401, b'{"error": {"message": "missing or wrong credentials"}}')
                continue
            if method == "GET":
                if path == "/metrics":
                    conn.respond(200, _metrics_text(behaviour), "text/plain; version=0.0.4")
                else:
                    conn.respond(200, b"{}")
                continue
            if not _serve(conn, path, json.loads(body or b"{}"), received, request_id):
                return  # connection cut on purpose
    except (ConnectionError, OSError):
        return
    finally:
        sock.close()


#: Body fields of OpenAI's own completions and chat APIs (what `--strict` accepts).
OPENAI_FIELDS = frozenset({
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options",
    "temperature", "top_p", "n", "stop", "echo", "logprobs", "top_logprobs", "presence_penalty",
    "frequency_penalty", "seed", "user", "suffix", "best_of", "logit_bias",
})


def _serve(conn: _Conn, path: str, payload: dict, received: float, request_id: str) -> bool:
    """Answer one POST; returns False when the connection was cut on purpose."""
    b = conn.b
    model = str(payload.get("model", ""))
    b.served[model] = b.served.get(model, 0) + 1
    if model in b.hang_models:
        gevent.sleep(3600)
    if model in b.error_models:
        conn.respond(500, json.dumps({"error": {"message": f"injected error for {model}"}}).encode())
        return True
    unknown = sorted(set(payload) - OPENAI_FIELDS) if b.strict and path != "/" else []
    if unknown:
        conn.respond(400, json.dumps({"error": {"message": f"Unrecognized request argument supplied: {unknown[0]}",
                                                "type": "invalid_request_error"}}).encode())
        return True
    prompt = payload.get("prompt", payload.get("messages", ""))
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int) and not b.accept_token_ids:
        conn.respond(400, b'{"error": {"message": "token id prompts are not accepted"}}')
        return True
    if (isinstance(prompt, list) and prompt and isinstance(prompt[0], int) and b.vocab_size is not None
            and max(prompt) >= b.vocab_size):
        conn.respond(400, json.dumps({"error": {"message": f"Token id {max(prompt)} is out of vocabulary",
                                                "type": "BadRequestError"}}).encode())
        return True
    n_out = max(1, int(payload.get("max_tokens") or 16))
    n_in = _count_prompt_tokens(prompt)
    cut_after = n_out // 2 if model in b.cut_models else None
    if path == "/":
        return _warmserve(conn, payload, n_out, received, cut_after, request_id)
    if path == "/v1/chat/completions" and not payload.get("stream"):
        gevent.sleep(max(0.0, received + b.ttft_s + b.gap_s * (n_out - 1) - time.perf_counter()))
        conn.respond(200, json.dumps({
            "id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " tok" * n_out},
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                      "total_tokens": n_in + n_out}}).encode())
        return True
    if path == "/v1/chat/completions":
        return _chat_stream(conn, model, n_in, n_out, received, cut_after, request_id)
    if path != "/v1/completions":
        conn.respond(404, b'{"error": {"message": "not found"}}')
        return True
    return _openai_stream(conn, model, n_in, n_out, received, cut_after, request_id)


class _Stream:
    """One streaming response in progress: the ticker writes its tokens as they fall due."""

    __slots__ = ("conn", "token", "last", "trailer", "n_out", "next_i", "due", "cut_after", "done",
                 "request_id", "received")

    def __init__(self, conn: _Conn, token: bytes, last: bytes, trailer: bytes, n_out: int,
                 received: float, cut_after: int | None, request_id: str) -> None:
        self.conn, self.n_out, self.cut_after = conn, n_out, cut_after
        self.request_id, self.received = request_id, received
        # Pre-framed HTTP chunks: writing a token is one send, no formatting.
        self.token = b"%x\r\n%s\r\n" % (len(token), token)
        self.last = b"%x\r\n%s\r\n" % (len(last), last)
        self.trailer = b"%x\r\n%s\r\n0\r\n\r\n" % (len(trailer), trailer)
        self.next_i, self.due = 0, received + conn.b.ttft_s
        self.done = Event()

    def _send(self, data: bytes) -> None:
        """One plain non-blocking send (no gevent wrapper: this runs tens of thousands of times a
        second); only a full socket buffer falls back to gevent's cooperative sendall."""
        try:
            sent = self.conn.sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.conn.sock.sendall(data[sent:])

    def write_due(self, now: float) -> bool:
        """Write every token due by `now`; True when the stream has ended (or was cut)."""
        gap = self.conn.b.gap_s
        while self.due <= now:
            i = self.next_i
            if self.cut_after is not None and i == self.cut_after:
                self.done.set(False)
                return True
            last = i == self.n_out - 1
            written_s = time.perf_counter()
            self._send(self.last + self.trailer if last else self.token)
            if i == 0:  # logged after the write, so logging never delays the token
                self.conn.b.log_first_token(self.request_id, self.received, written_s)
            if last:
                self.done.set(True)
                return True
            self.next_i, self.due = i + 1, self.due + gap
        return False


#: Longest stretch the ticker writes tokens before it lets other work of the loop run.
SLICE_S = 0.0005


class _Ticker:
    """Writes due tokens of all open streams, like one engine iteration every `gap_s`.

    The first token of each stream is written by its own greenlet at exactly `ttft_s` after the
    request arrived (the TTFT the benchmark relies on); later tokens ride the shared tick, so the
    server needs one timer per tick rather than one per token. Priorities keep the timing the
    benchmark reads exact: a due first token runs before new requests are read, and both before
    the tick's batch of later tokens (which takes about a millisecond at 25k tokens/s).
    """

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self.streams: list[_Stream] = []
        self._greenlet = None

    def add(self, stream: _Stream) -> None:
        delay = stream.due - time.perf_counter()
        if delay > 0:
            sleep_at_priority(delay, 1)
        try:
            finished = stream.write_due(time.perf_counter())
        except OSError:
            stream.done.set(False)
            return
        if finished:
            return
        self.streams.append(stream)
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while self.streams:
            sleep_at_priority(max(0.0005, self.gap_s), -1)
            now = time.perf_counter()
            keep = []
            slice_end = now + SLICE_S
            current, self.streams = self.streams, []  # add() appends to the new list meanwhile
            for stream in current:
                if time.perf_counter() > slice_end:
                    # let requests and first tokens that came meanwhile in before the rest
                    sleep_at_priority(0.0, -1)
                    slice_end = time.perf_counter() + SLICE_S
                try:
                    if not stream.write_due(now):
                        keep.append(stream)
                except OSError:
                    stream.done.set(False)
            self.streams = keep + self.streams
        self._greenlet = None


_TICKERS: dict[float, _Ticker] = {}


def _stream(conn: _Conn, token: bytes, last: bytes, trailer: bytes, n_out: int, received: float,
            cut_after: int | None, request_id: str, preamble: bytes = b"") -> bool:
    """Stream `preamble` at once, then `n_out` tokens, then the trailer; False if the stream was
    cut (close the socket)."""
    ticker = _TICKERS.setdefault(conn.b.gap_s, _Ticker(conn.b.gap_s))
    conn.start_stream()
    if preamble:
        conn.chunk(preamble)
    stream = _Stream(conn, token, last, trailer, n_out, received, cut_after, request_id)
    ticker.add(stream)
    return bool(stream.done.get())


def _openai_stream(conn: _Conn, model: str, n_in: int, n_out: int, received: float,
                   cut_after: int | None, request_id: str) -> bool:
    head = 'data: {"id":"cmpl-standin","object":"text_completion","created":0,"model":%s,"choices":[' % (
        json.dumps(model))
    token = (head + '{"index":0,"text":" tok","logprobs":null,"finish_reason":null}]}\n\n').encode()
    last = (head + '{"index":0,"text":" tok","logprobs":null,"finish_reason":"length"}]}\n\n').encode()
    usage = '{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (n_in, n_out, n_in + n_out)
    trailer = (head + '],"usage":' + usage + '}\n\ndata: [DONE]\n\n').encode()
    return _stream(conn, token, last, trailer, n_out, received, cut_after, request_id)


def _chat_stream(conn: _Conn, model: str, n_in: int, n_out: int, received: float,
                 cut_after: int | None, request_id: str) -> bool:
    """Chat completions as OpenAI streams them: a role-only event at once (no token: a client
    that counts it gets a TTFT near 0), then one content delta per token, then usage."""
    head = 'data: {"id":"chatcmpl-standin","object":"chat.completion.chunk","created":0,"model":%s,"choices":[' % (
        json.dumps(model))
    role = (head + '{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
                   '"finish_reason":null}]}\n\n').encode()
    token = (head + '{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]}\n\n').encode()
    last = (head + '{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":"length"}]}\n\n').encode()
    usage = '{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (n_in, n_out, n_in + n_out)
    trailer = (head + '],"usage":' + usage + '}\n\ndata: [DONE]\n\n').encode()
    return _stream(conn, token, last, trailer, n_out, received, cut_after, request_id, preamble=role)


def _warmserve(conn: _Conn, payload: dict, n_out: int, received: float, cut_after: int | None,
               request_id: str) -> bool:
    """The PrewarmManager's format: raw delta text chunks, then `#<completion_tokens>`."""
    stream = str(payload.get("stream", False)).lower() == "true"
    if not stream:
        gevent.sleep(max(0.0, received + conn.b.ttft_s + conn.b.gap_s * (n_out - 1) - time.perf_counter()))
        conn.respond(200, json.dumps(" tok" * n_out).encode())
        return True
    return _stream(conn, b" tok", b" tok", b"#%d" % n_out, n_out, received, cut_after,
                   request_id or str(payload.get("id", "")))


def serve(port: int, behaviour: Behaviour, host: str = "127.0.0.1") -> StreamServer:
    """Start serving in the current gevent hub; returns the started server."""
    server = StreamServer((host, port), lambda s, a: handle(s, a, behaviour), backlog=4096)
    server.start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    parser.add_argument("--error-model", action="append", default=[])
    parser.add_argument("--cut-model", action="append", default=[])
    parser.add_argument("--hang-model", action="append", default=[])
    parser.add_argument("--no-token-ids", action="store_true", help="reject token-id prompts (HTTP 400)")
    parser.add_argument("--strict", action="store_true",
                        help="reject body fields OpenAI's API does not define, as it does (HTTP 400)")
    parser.add_argument("--vocab-size", type=int, help="reject token ids at or above this (HTTP 400)")
    parser.add_argument("--require-header", action="append", default=[], metavar="NAME=VALUE",
                        help="answer 401 to requests without this header (repeatable)")
    parser.add_argument("--log", help="append each streamed request's arrival and first-token write "
                                      "times (perf_counter s) to this JSONL file")
    args = parser.parse_args(argv)
    behaviour = Behaviour(ttft_s=args.ttft_ms / 1000, gap_s=args.gap_ms / 1000,
                          error_models=set(args.error_model), cut_models=set(args.cut_model),
                          hang_models=set(args.hang_model), accept_token_ids=not args.no_token_ids,
                          strict=args.strict, vocab_size=args.vocab_size,
                          required_headers={k.strip().lower(): v for k, _, v in
                                            (h.partition("=") for h in args.require_header)},
                          log=open(args.log, "a", buffering=1) if args.log else None)
    server = StreamServer((args.host, args.port), lambda s, a: handle(s, a, behaviour), backlog=4096)
    server.serve_forever()


if __name__ == "__main__":
    main()
