"""The stand-in's bytes against the real servers' (tests/live/fixtures): the same status line,
headers in the same order (values equal but for the date), the same writes (one per token, the
trailer and the end chunk each their own), the same bodies but for ids, times and generated text,
and the same connection close. This is what keeps the contract tests (test_contracts.py), which run
against the stand-in, from being circular."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import pytest

from harness.loadgen import standin_conn
from harness.loadgen.standin import Behaviour, serve
from harness.loadgen.standin_wire import (
    SllmAnswer,
    sllm_answer,
    warmserve_parse,
    warmserve_prompt_tokens,
    warmserve_refused,
)

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*/*.json"))
WS_MODEL = "/models/llama-7b/tp1_pp1/0"

#: How the stand-in is set up to reproduce each fixture.
SETUP: dict[str, dict[str, Any]] = {
    "warmserve/stream_ok": {"models": {WS_MODEL}},
    "warmserve/stream_ok_authors_client": {"models": {WS_MODEL}},
    "warmserve/stream_ends_without_trailer": {"models": {WS_MODEL}, "cut_models": {WS_MODEL}},
    "warmserve/unknown_model_404": {"models": {WS_MODEL}},
    "warmserve/too_long_500": {"models": {WS_MODEL}},
    "warmserve/wrong_type_422": {"models": {WS_MODEL}},
    "warmserve/missing_field_422": {"models": {WS_MODEL}},
    "warmserve/bad_json_422": {"models": {WS_MODEL}},
    "warmserve/nonstream_ok": {"models": {WS_MODEL}},
    "serverlessllm/ok": {"serverlessllm": True, "models": {"opt-1.3b"}},
    "serverlessllm/ok_input_tokens": {"serverlessllm": True, "models": {"opt-1.3b"}},
    "serverlessllm/unknown_model_500": {"serverlessllm": True, "models": {"opt-1.3b"}},
    "serverlessllm/prompt_too_long_500": {"serverlessllm": True, "models": {"opt-1.3b"}},
    "serverlessllm/engine_not_running_200": {"serverlessllm": True, "models": {"opt-1.3b"},
                                             "error_body_models": {"opt-1.3b"}},
    "serverlessllm/stream_key_200": {"serverlessllm": True, "models": {"opt-1.3b"}},
    "serverlessllm/missing_model_400": {"serverlessllm": True, "models": {"opt-1.3b"}},
}
#: Fixtures the stand-in does not reproduce, and why.
NOT_REPRODUCED = {
    "warmserve/stream_text_like_trailer_first": "read boundaries of the client, not bytes the server chooses",
    "warmserve/stream_trailer_split": "read boundaries of the client, not bytes the server chooses",
    "warmserve/stream_empty": "the stand-in cuts a stream half-way, not before its first token",
    "serverlessllm/ok_created_int": "the other form of `created`: the stand-in sends the float of serverlessllm/ok",
    "serverlessllm/instance_stopped_200": "a router shutting down is not imitated",
}
_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_every_fixture_is_compared_or_says_why_not() -> None:
    ids = {fixture_id(p) for p in FIXTURES}
    assert ids == set(SETUP) | set(NOT_REPRODUCED)
    assert not set(SETUP) & set(NOT_REPRODUCED)


def standin_writes(fx: dict[str, Any], setup: dict[str, Any], monkeypatch) -> tuple[list[bytes], bool]:
    """(every write the stand-in made answering the fixture's request, whether it closed the
    connection afterwards)."""
    writes: list[bytes] = []
    write = standin_conn.ServerConn.write

    def recording(self, data: bytes) -> None:
        writes.append(bytes(data))
        write(self, data)

    monkeypatch.setattr(standin_conn.ServerConn, "write", recording)
    server = serve(0, Behaviour(ttft_s=0.001, gap_s=0.001, **setup))
    sock = gevent.socket.create_connection(("127.0.0.1", server.server_port))
    try:
        body = fx["request"]["body"].encode()
        head = f"POST {fx['request']['path']} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        closed = False
        sock.settimeout(0.5)
        try:
            while True:
                if not sock.recv(65536):
                    closed = True
                    break
        except TimeoutError:  # nothing more: the connection is kept alive
            pass
    finally:
        sock.close()
        server.stop()
    return writes, closed


def parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    assert raw.endswith(b"\r\n\r\n"), "the head is one write of its own"
    lines = raw[:-4].decode("latin-1").split("\r\n")
    return lines[0], [(name, value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])]


def one_chunk(write: bytes) -> bytes | None:
    """The payload of a write that is exactly one HTTP chunk; None for the end chunk."""
    size_line, sep, rest = write.partition(b"\r\n")
    assert sep and rest.endswith(b"\r\n"), f"not one whole chunk: {write!r}"
    size = int(size_line, 16)
    assert len(rest) == size + 2, f"not one whole chunk: {write!r}"
    return rest[:-2] if size else None


def stream_shape(writes: list[bytes]) -> list[str]:
    """Each write of a chunked body: TOKEN, the trailer `#N` as is, or END."""
    shape = []
    for w in writes:
        payload = one_chunk(w)
        if payload is None:
            shape.append("END")
        elif re.fullmatch(rb"#\d+", payload):
            shape.append(payload.decode())
        else:
            shape.append("TOKEN")
    return shape


def volatile_removed(body: bytes) -> Any:
    """The JSON body without what differs between two answers to one request: ids (checked to keep
    their prefix), times (checked to keep their type) and generated text."""
    obj = json.loads(body)
    if isinstance(obj, str):
        return "<text>"
    if isinstance(obj, dict) and obj.get("object") == "chat.completion":
        assert obj["id"].startswith("chatcmpl-")
        obj["id"] = "<id>"
        obj["created"] = f"<{type(obj['created']).__name__}>"
        for choice in obj["choices"]:
            choice["message"]["content"] = "<text>"
    return obj


@pytest.mark.parametrize("fixture_key", sorted(SETUP))
def test_the_standin_sends_the_real_servers_bytes(fixture_key: str, monkeypatch) -> None:
    fx = json.loads((Path(__file__).parent / "fixtures" / f"{fixture_key}.json").read_text())
    writes, closed = standin_writes(fx, SETUP[fixture_key], monkeypatch)
    status_line, headers = parse_head(writes[0])
    assert status_line == f"HTTP/1.1 {fx['response_status']} {fx['response_reason']}"
    assert [n for n, _ in headers] == [n for n, _ in fx["response_headers"]]
    for (name, value), (_, real) in zip(headers, fx["response_headers"]):
        if name == "date":
            assert _DATE.match(value), value
        elif name != "content-length":
            assert value == real, name
    body_writes = writes[1:]
    if dict(fx["response_headers"]).get("transfer-encoding") == "chunked":
        real = [w.encode() for w in fx["response_chunks"]]
        assert stream_shape(body_writes) == stream_shape(real)
    else:
        assert len(body_writes) == 1, "a whole body is one write after the head"
        (body,) = body_writes
        assert int(dict(headers)["content-length"]) == len(body)
        real_body = "".join(fx["response_chunks"]).encode()
        if dict(headers)["content-type"] == "application/json":
            assert volatile_removed(body) == volatile_removed(real_body)
        if not real_body.startswith((b"{\"id\"", b"\"")):  # errors carry nothing volatile: exact bytes
            assert body == real_body
    assert closed == fx["closes_connection"]


# FastAPI's answers for bodies that are not an object, captured from real uvicorn/FastAPI serving the
# reference's RequestModel (tests/live/fixtures/README.md says how).
_NOT_AN_OBJECT = ('{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid '
                  'dictionary or object to extract fields from","input":%s}]}')


@pytest.mark.parametrize(("body", "answer"), [
    (b"[1]", _NOT_AN_OBJECT % "[1]"),
    (b'"x"', _NOT_AN_OBJECT % '"x"'),
    (b"", '{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}'),
])
def test_warmserve_bodies_that_are_not_an_object_get_fastapis_422(body: bytes, answer: str) -> None:
    request, error = warmserve_parse(body)
    assert request is None and error == answer.encode()


def test_warmserve_accepts_what_pydantic_coerces_and_refuses_what_vllm_refuses() -> None:
    request, _ = warmserve_parse(b'{"id": true, "model": "m/0", "prompt": "a", "max_tokens": "3", "stream": 1}')
    assert request is not None and (request.id, request.max_tokens, request.stream) == (1, 3, True)
    prompt = warmserve_prompt_tokens("a " * 40)  # 40 words + the chat template
    assert prompt == 48
    assert not warmserve_refused(prompt, 2000, 2048) and warmserve_refused(prompt, 2001, 2048)
    assert warmserve_refused(prompt, 0, 2048)  # vLLM: max_tokens must be at least 1
    assert not warmserve_refused(prompt, None, 2048)  # vLLM fills in what is left of the context


def test_serverlessllm_rules_of_its_vllm_backend() -> None:
    def answer(payload: dict, max_model_len: int = 2048) -> SllmAnswer:
        return sllm_answer(json.dumps(payload).encode(), {"m"}, set(), max_model_len)

    base = {"model": "m", "messages": [{"role": "user", "content": "a a a a"}], "max_tokens": 3}
    ok = answer(base)
    assert (ok.status, ok.prompt_tokens, ok.output_tokens) == (200, 7, 3)  # "user: a a a a" + BOS
    # input_tokens is popped only when not None: null reaches SamplingParams (vllm_backend.py:232)
    assert json.loads(answer({**base, "input_tokens": None}).body) == {
        "error": "Invalid sampling parameters: Unexpected keyword argument 'input_tokens'"}
    assert answer({**base, "input_tokens": [5, 6]}).prompt_tokens == 2
    assert answer({**base, "ignore_eos": True, "min_tokens": 3}).status == 200  # SamplingParams fields
    # prompt + max_tokens over the context: not refused, the output stops at the limit
    capped = answer({**base, "max_tokens": 100}, max_model_len=10)
    assert (capped.status, capped.output_tokens) == (200, 3)
    assert answer(base, max_model_len=6).status == 500  # a prompt over the context: vLLM raises
    assert answer({**base, "model": "other"}).status == 500  # no router actor for it
    assert answer({"messages": []}).status == 400
