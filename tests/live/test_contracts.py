"""Adapters for systems that need a GPU, against stand-ins that follow their real wire formats.

WarmServe's PrewarmManager (`POST /` on :9999, body `{"id","model","prompt","max_tokens","stream"}`,
answered with raw text chunks then `#<completion tokens>`, 404 for an unknown model) and
ServerlessLLM's OpenAI-style chat API, which does not stream.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from geventhttpclient import HTTPClient

from harness.loadgen.protocols import Endpoint, build_request
from systems.live import run_live
from workloads.workload import Workload, canonical_frame

pytestmark = pytest.mark.contract


def workload(models: list[str], n: int = 12) -> Workload:
    frame = canonical_frame(np.linspace(0, 0.6, n), [models[i % len(models)] for i in range(n)],
                            np.full(n, 30), np.full(n, 7))
    return Workload(frame, {"source": "contract"})


def test_warmserve_request_has_the_prewarm_manager_fields() -> None:
    path, body = build_request(Endpoint(url="http://h:9999", protocol="warmserve", served_name="llama/0"),
                               request_id=5, input_tokens=30, output_tokens=7, seed=0)
    payload = json.loads(body)
    assert path == "/"
    assert set(payload) == {"id", "model", "prompt", "max_tokens", "stream"}
    assert payload["id"] == 5 and payload["model"] == "llama/0" and payload["stream"] is True
    assert payload["max_tokens"] == 7 and isinstance(payload["prompt"], str)


def test_warmserve_stream_ttft_and_token_count_from_the_trailer(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "25", "--gap-ms", "3", "--cut-model", "broken")
    result = run_live(workload(["llama-2-7b", "broken"]), "warmserve",
                      {"url": url, "served_names": {"llama-2-7b": "/models/llama-7b/tp1_pp1/0"}},
                      tmp_path / "run")
    req = result.requests
    ok = req[req["model"] == "llama-2-7b"]
    assert (ok["status"] == "ok").all() and (ok["received_tokens"] == 7).all()
    assert ((ok["first_token_s"] - ok["scheduled_s"]) >= 0.025).all()
    broken = req[req["model"] == "broken"]
    assert (broken["status"] == "error").all()  # no '#<tokens>' trailer: cut mid-stream


def test_warmserve_unknown_model_is_a_failed_record(tmp_path: Path) -> None:
    """The PrewarmManager answers 404 'Model not found in ModelList'; a server in that format."""
    from gevent.pywsgi import WSGIServer

    def app(environ, start_response):
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'"Model not found in ModelList"']

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        result = run_live(workload(["nope"], 3), "warmserve", {"url": f"http://127.0.0.1:{server.server_port}"},
                          tmp_path / "run")
    finally:
        server.stop()
    assert (result.requests["status"] == "error").all()
    assert result.requests["error"].str.contains("Model not found in ModelList").all()


def test_serverlessllm_reports_e2e_and_ttft_unavailable_not_zero(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "20", "--gap-ms", "2")
    result = run_live(workload(["qwen2.5-7b"]), "serverlessllm", {"url": url}, tmp_path / "run")
    req = result.requests
    assert (req["status"] == "ok").all()
    assert req["first_token_s"].isna().all()
    assert ((req["end_s"] - req["scheduled_s"]) >= 0.020 + 6 * 0.002).all()
    assert (req["received_tokens"] == 7).all()


def test_serverlessllm_body_is_an_openai_chat_request(standin) -> None:
    url = standin()
    path, body = build_request(Endpoint(url=url, protocol="serverlessllm", served_name="m"),
                               request_id=1, input_tokens=20, output_tokens=4, seed=0)
    assert path == "/v1/chat/completions"
    payload = json.loads(body)
    assert payload["messages"][0]["role"] == "user" and "stream" not in payload
    client = HTTPClient.from_url(url)
    resp = client.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    answer = json.loads(resp.read())
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] == 4
