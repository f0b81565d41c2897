"""The WarmServe and ServerlessLLM adapters against servers that write the real projects' bytes.

Each server here is a raw TCP server in this process: it writes the status line, headers and
body chunks the real servers write (WarmServe: uvicorn + a Starlette StreamingResponse, one
chunk per `yield` of prewarm_manager.py's resp_generator; ServerlessLLM: FastAPI returning the
router's dict as JSON, HTTP 200 even for `{"error": ...}`), read by the real client code
(run_live -> replay -> client -> http), never by the stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gevent
import numpy as np
import pytest
from gevent.server import StreamServer

from harness.contracts.errors import WarmbenchError
from harness.live import run_live
from tests.rawhttp import read_request
from workloads.workload import Workload, canonical_frame

#: (bytes to send, seconds to wait before sending them)
Segments = list[tuple[bytes, float]]


def workload(models: list[str], n: int = 4, input_tokens: int = 30, output_tokens: int = 5) -> Workload:
    frame = canonical_frame(np.linspace(0, 0.2, n), [models[i % len(models)] for i in range(n)],
                            np.full(n, input_tokens), np.full(n, output_tokens))
    return Workload(frame, {"source": "adapters-real"})


class RawServer:
    """Answers each request with the segments `respond(body)` gives; keeps every request body."""

    def __init__(self, respond: Callable[[dict], Segments]) -> None:
        self.respond, self.bodies = respond, []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def _handle(self, sock, _addr) -> None:
        buf = b""
        try:
            while (got := read_request(sock, buf)) is not None:
                request, buf = got
                body = json.loads(request.body)
                self.bodies.append(body)
                for data, wait_s in self.respond(body):
                    if wait_s:
                        gevent.sleep(wait_s)
                    sock.sendall(data)
        except OSError:
            return
        finally:
            sock.close()

    def stop(self) -> None:
        self.server.stop()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


#: uvicorn's head for a StreamingResponse(media_type="text/event-stream") (prewarm_manager.py,
#: request_handler: `return StreamingResponse(content=resp_generator(chat), media_type="text/event-stream")`).
WARMSERVE_HEAD = (b"HTTP/1.1 200 OK\r\ndate: Sun, 29 Nov 2026 10:00:00 GMT\r\nserver: uvicorn\r\n"
                  b"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n")


def warmserve_stream(texts: list[bytes], trailer: bytes | None, gap_s: float = 0.03) -> Segments:
    """One chunk per yield, each after a pause (so that each is its own read), then the end chunk."""
    out: Segments = [(WARMSERVE_HEAD, 0.0)]
    out += [(chunk(t), gap_s) for t in texts]
    if trailer is not None:
        out += [(chunk(trailer), gap_s)]
    return out + [(b"0\r\n\r\n", gap_s)]


def sllm_json(obj: object) -> Segments:
    body = json.dumps(obj).encode()
    return [(b"HTTP/1.1 200 OK\r\ndate: Sun, 29 Nov 2026 10:00:00 GMT\r\nserver: uvicorn\r\n"
             b"content-length: %d\r\ncontent-type: application/json\r\n\r\n%s" % (len(body), body), 0.0)]


def completion(completion_tokens: int, prompt_tokens: int = 30) -> dict:
    """vllm_backend.py:49-82 process_output (created: the float arrival time)."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1732871234.25, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a " * completion_tokens},
                         "logprobs": None, "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


@pytest.fixture
def raw_servers():
    servers: list[RawServer] = []

    def start(respond: Callable[[dict], Segments]) -> RawServer:
        servers.append(RawServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


# --- ServerlessLLM ---------------------------------------------------------------------------

def test_serverlessllm_200_with_an_error_body_is_a_failed_record(raw_servers, tmp_path: Path) -> None:
    # vllm_backend.py:244 (any key SamplingParams refuses) and :211 (engine not running)
    server = raw_servers(lambda body: sllm_json({"error": "Engine is not running"}))
    result = run_live(workload(["m"]), "serverlessllm", {"url": server.url}, tmp_path / "run")
    req = result.requests
    assert (req["status"] == "error").all()
    assert req["error"].str.contains("Engine is not running").all()
    assert req["claimed_tokens"].isna().all()


def test_serverlessllm_request_pins_lengths_and_reports_a_server_that_does_not(raw_servers,
                                                                            tmp_path: Path) -> None:
    # A version that drops the sampling keys (before commit 0074717 with msgspec SamplingParams)
    # generates vLLM's default 16 tokens whatever is asked: recorded, and said in a warning.
    server = raw_servers(lambda body: sllm_json(completion(16, len(body.get("input_tokens", [])))))
    result = run_live(workload(["m"], output_tokens=5), "serverlessllm", {"url": server.url}, tmp_path / "run")
    body = server.bodies[0]
    assert "stream" not in body and "stream_options" not in body
    assert body["ignore_eos"] is True and body["min_tokens"] == body["max_tokens"] == 5
    assert len(body["input_tokens"]) == 30
    req = result.requests
    assert (req["status"] == "ok").all() and (req["received_tokens"] == 16).all()
    assert (req["server_input_tokens"] == 30).all() and (req["sent_output_tokens"] == 5).all()
    assert any("another number of tokens than asked" in w for w in result.manifest["warnings"])


# --- WarmServe -------------------------------------------------------------------------------

def test_warmserve_lengths_are_capped_to_its_engines_and_the_cap_is_recorded(raw_servers,
                                                                          tmp_path: Path) -> None:
    server = raw_servers(lambda body: warmserve_stream([b" a"] * 3, b"#%d" % body["max_tokens"], 0.0))
    result = run_live(workload(["m"], n=2, input_tokens=3000, output_tokens=1500), "warmserve",
                      {"url": server.url}, tmp_path / "run")
    for body in server.bodies:
        assert body["max_tokens"] == 1023 and len(body["prompt"].split()) + 8 + 1023 <= 2048
    req = result.requests
    assert (req["output_tokens"] == 1500).all() and (req["sent_output_tokens"] == 1023).all()
    assert (req["input_tokens"] == 3000).all() and (req["sent_input_tokens"] == 2048 - 1023).all()
    assert any("capped" in w for w in result.manifest["warnings"])
    assert result.manifest["system_detail"]["max_model_len"] == 2048


def test_warmserve_max_model_len_is_an_option(raw_servers, tmp_path: Path) -> None:
    server = raw_servers(lambda body: warmserve_stream([b" a"], b"#%d" % body["max_tokens"], 0.0))
    run_live(workload(["m"], n=1, input_tokens=900, output_tokens=900), "warmserve",
             {"url": server.url, "max_model_len": 1024}, tmp_path / "run")
    assert server.bodies[0]["max_tokens"] + len(server.bodies[0]["prompt"].split()) + 8 <= 1024


def test_two_runs_against_one_warmserve_never_reuse_a_request_id(raw_servers, tmp_path: Path) -> None:
    server = raw_servers(lambda body: warmserve_stream([b" a"] * 5, b"#5", 0.0))
    run_live(workload(["m"], n=6), "warmserve", {"url": server.url}, tmp_path / "one")
    first = {b["id"] for b in server.bodies}
    run_live(workload(["m"], n=6), "warmserve", {"url": server.url}, tmp_path / "two")
    second = {b["id"] for b in server.bodies} - first
    assert len(first) == 6 and len(second) == 6  # disjoint, each run's ids distinct
    assert all(isinstance(i, int) and 0 <= i < 2**53 for i in first | second)  # RequestModel: `id: int`
    run_live(workload(["m"], n=2), "warmserve", {"url": server.url, "request_id_offset": 1000},
             tmp_path / "three")
    assert [b["id"] for b in server.bodies[-2:]] == [1000, 1001]


def _warmserve_run(raw_servers, tmp_path: Path, texts: list[bytes], trailer: bytes | None,
                   output_tokens: int) -> dict:
    server = raw_servers(lambda body: warmserve_stream(texts, trailer))
    result = run_live(workload(["m"], n=1, output_tokens=output_tokens), "warmserve", {"url": server.url},
                      tmp_path / "run")
    return result.requests.iloc[0].to_dict()


def test_warmserve_a_read_of_text_that_is_hash_12_is_a_token(raw_servers, tmp_path: Path) -> None:
    rec = _warmserve_run(raw_servers, tmp_path, [b"#12", b" is", b" fixed"], b"#3", 3)
    assert rec["status"] == "ok" and rec["streamed_tokens"] == 3 and rec["received_tokens"] == 3
    assert len(rec["itl_s"]) == 2 and not rec["tokens_mismatch"]


def test_warmserve_a_trailer_split_across_reads_counts_no_token(raw_servers, tmp_path: Path) -> None:
    # the trailer's one chunk (one yield) arrives in two reads: '#1' then '28'
    trailer = chunk(b"#128")
    server = raw_servers(lambda body: [(WARMSERVE_HEAD, 0.0), *[(chunk(b" a"), 0.005)] * 128,
                                       (trailer[:5], 0.03), (trailer[5:], 0.03), (b"0\r\n\r\n", 0.03)])
    result = run_live(workload(["m"], n=1, output_tokens=128), "warmserve", {"url": server.url},
                      tmp_path / "run")
    rec = result.requests.iloc[0]
    assert rec["status"] == "ok" and rec["streamed_tokens"] == 128 and rec["received_tokens"] == 128
    assert len(rec["itl_s"]) == 127 and not rec["tokens_mismatch"]


def test_warmserve_deltas_read_together_each_count(raw_servers, tmp_path: Path) -> None:
    # uvicorn writes one HTTP chunk per yielded delta: three deltas in one read are three tokens
    server = raw_servers(lambda body: [(WARMSERVE_HEAD, 0.0), (chunk(b" a") + chunk(b" b") + chunk(b" c"), 0.03),
                                       (chunk(b" d"), 0.03), (chunk(b"#4"), 0.03), (b"0\r\n\r\n", 0.03)])
    result = run_live(workload(["m"], n=1, output_tokens=4), "warmserve", {"url": server.url}, tmp_path / "run")
    rec = result.requests.iloc[0]
    assert rec["status"] == "ok" and rec["streamed_tokens"] == 4 and rec["received_tokens"] == 4
    assert rec["itl_s"][:2] == [0.0, 0.0] and rec["itl_s"][2] > 0


def test_warmserve_a_clean_end_without_the_trailer_is_a_failed_record(raw_servers, tmp_path: Path) -> None:
    # resp_generator: an exception mid-stream is printed and the generator ends, no '#N' (nor when
    # the last chunk has no usage): the body still ends with the zero chunk, cleanly.
    rec = _warmserve_run(raw_servers, tmp_path, [b" a", b" b"], None, 5)
    assert rec["status"] == "error" and "trailer" in rec["error"]


# --- --endpoint MODEL=URL ----------------------------------------------------------------------

@pytest.mark.parametrize("system", ["warmserve", "serverlessllm"])
def test_endpoint_per_model_routes_each_model_to_its_url(system: str, raw_servers, tmp_path: Path) -> None:
    def respond(body: dict) -> Segments:
        return warmserve_stream([b" a"] * 5, b"#5", 0.0) if system == "warmserve" else sllm_json(completion(5))

    one, two = raw_servers(respond), raw_servers(respond)
    result = run_live(workload(["m1", "m2"], n=4), system, {"endpoints": {"m1": one.url, "m2": two.url}},
                      tmp_path / "run")
    assert (result.requests["status"] == "ok").all()
    assert {b["model"] for b in one.bodies} == {"m1"} and {b["model"] for b in two.bodies} == {"m2"}


@pytest.mark.parametrize("system", ["warmserve", "serverlessllm"])
def test_replay_flags_pass_endpoint_per_model(system: str) -> None:
    import argparse

    from harness.commands.replay import options_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["replay", "--system", system, "--endpoint", "m1=http://h:1",
                              "--endpoint", "m2=http://h:2"])
    opts = options_from_args(args)
    assert opts["endpoints"] == {"m1": "http://h:1", "m2": "http://h:2"}


def test_a_model_without_an_endpoint_is_refused_not_sent_to_the_default_port(tmp_path: Path) -> None:
    with pytest.raises(WarmbenchError, match="m2"):
        run_live(workload(["m1", "m2"]), "warmserve", {"endpoints": {"m1": "http://127.0.0.1:9"}},
                 tmp_path / "run")
