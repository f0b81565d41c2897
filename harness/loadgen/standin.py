"""A small streaming server for the load generator's benchmark and contract tests.

It speaks four real wire formats, with the bytes the real servers send (uvicorn's head, Starlette's
`; charset=utf-8` on text types, one HTTP chunk per write: standin_conn; tests/live/fixtures hold the
reference bytes and tests/live/test_standin_bytes.py compares): OpenAI completions and chat completions with
SSE streaming (as vLLM serves them; chat opens with a role-only event), the WarmServe
PrewarmManager endpoint (`POST /`: FastAPI's 422 for a body of the wrong types, 404 for a model not
registered with `--model`, raw text chunks then `#<completion tokens>`, a text/plain 500 and a closed
connection for prompt + max_tokens over `--max-model-len` (2048), with its load accounting: an id
counts toward the model's load only the first time it is seen), and, with `--serverlessllm`,
ServerlessLLM's chat API on /v1/chat/completions (never streamed; failures as HTTP 200
`{"error": ...}`, an unknown model as a text/plain 500). Each request waits `ttft_s`, then emits one
token every `gap_s`. Faults can be injected per model name: HTTP 500 (for WarmServe and
ServerlessLLM their text/plain 500), a stream cut mid-way (WarmServe: a clean end without the
trailer, its real failure mode), a hang, or (`--error-body-model`, ServerlessLLM) a 200 error body;
`--no-token-ids` and `--strict` make it refuse token-id prompts or vLLM's extra fields, as other
servers do; `--vocab-size N` refuses token ids >= N (HTTP 400, as vLLM does); `--require-header
NAME=VALUE` answers 401 to any request without that header (an API key; as with vLLM's
`--api-key`, `/health` stays open). Run it as `python -m harness.loadgen.standin --port P
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
from gevent.server import StreamServer

from harness.loadgen.standin_conn import ServerConn
from harness.loadgen.standin_stream import stream
from harness.loadgen.standin_wire import (
    WARMSERVE_MAX_MODEL_LEN,
    sllm_answer,
    sllm_completion,
    warmserve_parse,
    warmserve_prompt_tokens,
    warmserve_refused,
)


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
    models: set[str] = field(default_factory=set)  # served model names; empty: any name
    serverlessllm: bool = False  # /v1/chat/completions answers as ServerlessLLM does
    error_body_models: set[str] = field(default_factory=set)  # ServerlessLLM: 200 {"error": ...}
    max_model_len: int = WARMSERVE_MAX_MODEL_LEN  # WarmServe and ServerlessLLM context limit
    # WarmServe's load accounting (prewarm_manager.py schedule / compl_request): a model's load
    # grows only for an id not seen before (`recorded_reqs`), its engine's for every request;
    # both shrink when a request completes, and a request vLLM refused is never uncounted.
    recorded_ids: set[int] = field(default_factory=set)
    model_load: dict[str, int] = field(default_factory=dict)
    engine_load: dict[str, int] = field(default_factory=dict)

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


def _metrics_text(b: Behaviour) -> bytes:
    lines = ["# HELP standin_requests_total Requests served per model.",
             "# TYPE standin_requests_total counter"]
    lines += [f'standin_requests_total{{model_name="{m}"}} {n}' for m, n in sorted(b.served.items())]
    for name, loads in (("model_load", b.model_load), ("engine_load", b.engine_load)):
        if loads:
            help_text = f"WarmServe's {name.replace('_', ' ')}: requests counted and not yet uncounted."
            lines += [f"# HELP standin_warmserve_{name} {help_text}", f"# TYPE standin_warmserve_{name} gauge"]
            lines += [f'standin_warmserve_{name}{{model_name="{m}"}} {n}' for m, n in sorted(loads.items())]
    return ("\n".join(lines) + "\n").encode()


def handle(sock: gevent.socket.socket, _address: tuple[str, int], behaviour: Behaviour) -> None:
    """Serve one connection until the client closes it (or a fault cuts it)."""
    # Like uvicorn / asyncio (what vLLM runs on): no Nagle, or a token written right after the
    # response head waits for the client's delayed ACK (tens of ms of false TTFT).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = ServerConn(sock, behaviour)
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
                    conn.respond(200, _metrics_text(behaviour), "text/plain; version=0.0.4; charset=utf-8")
                else:
                    conn.respond(200, b"{}")
                continue
            if path == "/":
                served = _warmserve(conn, body, received, request_id)
            elif path == "/v1/chat/completions" and behaviour.serverlessllm:
                served = _serverlessllm(conn, body, received)
            else:
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    conn.respond(400, b'{"error": {"message": "body is not JSON"}}')
                    continue
                served = _serve(conn, path, payload, received, request_id)
            if not served:
                return  # connection closed on purpose
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


def _serve(conn: ServerConn, path: str, payload: dict, received: float, request_id: str) -> bool:
    """Answer one POST in vLLM's OpenAI formats; returns False when the connection was cut on purpose."""
    b = conn.b
    if path not in ("/v1/completions", "/v1/chat/completions"):
        conn.respond(404, b'{"detail":"Not Found"}')  # FastAPI's answer for a route it lacks
        return True
    model = str(payload.get("model", ""))
    b.served[model] = b.served.get(model, 0) + 1
    if model in b.hang_models:
        gevent.sleep(3600)
    if model in b.error_models:
        conn.respond(500, json.dumps({"error": {"message": f"injected error for {model}"}}).encode())
        return True
    if b.models and model not in b.models:  # vLLM's serving_engine: an ErrorResponse, 404
        conn.respond(404, json.dumps({"object": "error", "message": f"The model `{model}` does not exist.",
                                      "type": "NotFoundError", "param": None, "code": 404}).encode())
        return True
    unknown = sorted(set(payload) - OPENAI_FIELDS) if b.strict else []
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
    return _openai_stream(conn, model, n_in, n_out, received, cut_after, request_id)


def _openai_stream(conn: ServerConn, model: str, n_in: int, n_out: int, received: float,
                   cut_after: int | None, request_id: str) -> bool:
    """Completions as vLLM streams them: one event per token, the usage event and `[DONE]` each
    their own chunk."""
    head = 'data: {"id":"cmpl-standin","object":"text_completion","created":0,"model":%s,"choices":[' % (
        json.dumps(model))
    token = (head + '{"index":0,"text":" tok","logprobs":null,"finish_reason":null}]}\n\n').encode()
    last = (head + '{"index":0,"text":" tok","logprobs":null,"finish_reason":"length"}]}\n\n').encode()
    usage = '{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (n_in, n_out, n_in + n_out)
    tail = ((head + '],"usage":' + usage + '}\n\n').encode(), b"data: [DONE]\n\n")
    return stream(conn, token, last, tail, n_out, received, cut_after, request_id)


def _chat_stream(conn: ServerConn, model: str, n_in: int, n_out: int, received: float,
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
    tail = ((head + '],"usage":' + usage + '}\n\n').encode(), b"data: [DONE]\n\n")
    return stream(conn, token, last, tail, n_out, received, cut_after, request_id, preamble=role)


def _wait_tokens(b: Behaviour, received: float, n_out: int) -> None:
    """Until a non-streamed answer of `n_out` tokens would be complete."""
    gevent.sleep(max(0.0, received + b.ttft_s + b.gap_s * (n_out - 1) - time.perf_counter()))


def _warmserve(conn: ServerConn, body: bytes, received: float, request_id: str) -> bool:
    """The PrewarmManager (prewarm_manager.py request_handler): FastAPI's 422 for a bad body, 404
    for a model it does not serve, a text/plain 500 (and a closed connection) for what vLLM
    refuses, else raw delta text chunks, then `#<completion tokens>`."""
    b = conn.b
    request, error_body = warmserve_parse(body)
    if request is None:
        conn.respond(422, error_body)
        return True
    model = request.model
    b.served[model] = b.served.get(model, 0) + 1
    if b.models and model not in b.models:
        conn.respond(404, b'"Model not found in ModelList"')
        return True
    if request.id not in b.recorded_ids:  # schedule(): load counted once per id, for good
        b.recorded_ids.add(request.id)
        b.model_load[model] = b.model_load.get(model, 0) + 1
    b.engine_load[model] = b.engine_load.get(model, 0) + 1
    if model in b.hang_models:
        gevent.sleep(3600)
    n_in = warmserve_prompt_tokens(request.prompt)
    if model in b.error_models or warmserve_refused(n_in, request.max_tokens, b.max_model_len):
        conn.crash()  # the engine call raised; compl_request is never reached: loads stay counted
        return False
    n_out = request.max_tokens if request.max_tokens is not None else b.max_model_len - n_in
    if not request.stream:
        _wait_tokens(b, received, n_out)
        conn.respond(200, json.dumps(" tok" * n_out).encode())
    else:
        cut_after = n_out // 2 if model in b.cut_models else None
        stream(conn, b" tok", b" tok", (b"#%d" % n_out,), n_out, received, cut_after,
                request_id or str(request.id), clean_cut=True)
    b.engine_load[model] -= 1  # compl_request(): both shrink, whether or not the id was new
    b.model_load[model] = b.model_load.get(model, 0) - 1
    return True


def _serverlessllm(conn: ServerConn, body: bytes, received: float) -> bool:
    """ServerlessLLM's POST /v1/chat/completions (app_lib.py inference_handler, vllm_backend.py
    generate): never streamed; a raised exception is a text/plain 500 and a closed connection."""
    b = conn.b
    created_s = time.time()  # vLLM's arrival_time: wall-clock float seconds
    answer = sllm_answer(body, b.models, b.error_body_models, b.max_model_len)
    model = answer.model
    if model:
        b.served[model] = b.served.get(model, 0) + 1
        if model in b.hang_models:
            gevent.sleep(3600)
        if model in b.error_models:
            answer.status = 500
    if answer.status == 500:
        conn.crash()
        return False
    if answer.body:
        conn.respond(answer.status, answer.body)
        return True
    _wait_tokens(b, received, answer.output_tokens)
    conn.respond(200, sllm_completion(answer, created_s, " tok" * answer.output_tokens))
    return True


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
    parser.add_argument("--model", action="append", default=[],
                        help="a served model name (repeatable); others get the real server's error "
                             "(WarmServe 404, ServerlessLLM 500, vLLM 404). Default: any name")
    parser.add_argument("--serverlessllm", action="store_true",
                        help="answer /v1/chat/completions as ServerlessLLM does (never streamed)")
    parser.add_argument("--error-body-model", action="append", default=[],
                        help="ServerlessLLM: answer this model with HTTP 200 {\"error\": \"Engine is not running\"}")
    parser.add_argument("--max-model-len", type=int, default=WARMSERVE_MAX_MODEL_LEN,
                        help="WarmServe / ServerlessLLM context limit in tokens (default: WarmServe's 2048)")
    args = parser.parse_args(argv)
    behaviour = Behaviour(ttft_s=args.ttft_ms / 1000, gap_s=args.gap_ms / 1000,
                          error_models=set(args.error_model), cut_models=set(args.cut_model),
                          hang_models=set(args.hang_model), accept_token_ids=not args.no_token_ids,
                          strict=args.strict, vocab_size=args.vocab_size, models=set(args.model),
                          serverlessllm=args.serverlessllm, error_body_models=set(args.error_body_model),
                          max_model_len=args.max_model_len,
                          required_headers={k.strip().lower(): v for k, _, v in
                                            (h.partition("=") for h in args.require_header)},
                          log=open(args.log, "a", buffering=1) if args.log else None)
    server = StreamServer((args.host, args.port), lambda s, a: handle(s, a, behaviour), backlog=4096)
    server.serve_forever()


if __name__ == "__main__":
    main()
