"""Adapters for systems that need a GPU, against the stand-in, whose bytes tests/live/test_standin_bytes.py
holds to the real servers' (tests/live/fixtures, reconstructed from their source).

WarmServe's PrewarmManager (`POST /` on :9999, body `{"id","model","prompt","max_tokens","stream"}`,
answered with raw text chunks then `#<completion tokens>`, 404 for an unknown model, a text/plain 500
for a request over its engines' 2048 tokens) and ServerlessLLM's chat API, which never streams and
answers many failures with HTTP 200 `{"error": ...}`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from geventhttpclient import HTTPClient

from harness.contracts.endpoint import Endpoint
from harness.live import run_live
from harness.loadgen.protocols import build_request
from harness.loadgen.telemetry import parse_prometheus
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
    url = standin("--ttft-ms", "25", "--gap-ms", "3", "--cut-model", "broken",
                  "--model", "/models/llama-7b/tp1_pp1/0", "--model", "broken")
    result = run_live(workload(["llama-2-7b", "broken"]), "warmserve",
                      {"url": url, "served_names": {"llama-2-7b": "/models/llama-7b/tp1_pp1/0"}},
                      tmp_path / "run")
    req = result.requests
    ok = req[req["model"] == "llama-2-7b"]
    assert (ok["status"] == "ok").all() and (ok["received_tokens"] == 7).all()
    assert ((ok["first_token_s"] - ok["scheduled_s"]) >= 0.025).all()
    broken = req[req["model"] == "broken"]
    # the real failure mode: the stream ends cleanly, tokens but no '#<tokens>' trailer
    assert (broken["status"] == "error").all() and broken["error"].str.contains("trailer").all()
    # the 3 tokens before the cut are kept (reads that arrive together share one token event)
    assert broken["streamed_tokens"].between(1, 3).all()


def test_warmserve_unknown_model_is_a_failed_record(standin, tmp_path: Path) -> None:
    """The PrewarmManager answers 404 'Model not found in ModelList' for a model it does not hold."""
    url = standin("--model", "/models/llama-7b/tp1_pp1/0")
    result = run_live(workload(["nope"], 3), "warmserve", {"url": url}, tmp_path / "run")
    assert (result.requests["status"] == "error").all()
    assert result.requests["error"].str.contains("HTTP 404").all()
    assert result.requests["error"].str.contains("Model not found in ModelList").all()


def _warmserve_loads(url: str) -> dict[str, float]:
    """The stand-in's view of the manager's load accounting: {gauge name: value} for all models."""
    text = HTTPClient.from_url(url).get("/metrics").read().decode()
    return {name: value for name, _labels, value in parse_prometheus(text) if name.startswith("standin_warmserve_")}


def test_warmserve_request_over_its_engines_context_fails_and_stays_counted(standin) -> None:
    """Over 2048 tokens vLLM refuses; the manager answers a text/plain 500, closes the connection,
    and never uncounts the request from its engine's load."""
    url = standin("--ttft-ms", "1", "--gap-ms", "1")
    client = HTTPClient.from_url(url)
    body = json.dumps({"id": 1, "model": "m/0", "prompt": "a " * 41, "max_tokens": 2000, "stream": True})
    resp = client.post("/", body=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 500 and resp.read() == b"Internal Server Error"
    assert resp["content-type"] == "text/plain; charset=utf-8"
    assert _warmserve_loads(url) == {"standin_warmserve_model_load": 1, "standin_warmserve_engine_load": 1}


def test_warmserve_lengths_capped_by_the_adapter_never_hit_the_limit(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "1", "--gap-ms", "0.2")
    frame = canonical_frame(np.linspace(0, 0.2, 3), "m/0", np.full(3, 1500), np.full(3, 1000))
    result = run_live(Workload(frame, {"source": "contract"}), "warmserve", {"url": url}, tmp_path / "run")
    assert (result.requests["status"] == "ok").all(), result.requests["error"].tolist()
    assert _warmserve_loads(url) == {"standin_warmserve_model_load": 0, "standin_warmserve_engine_load": 0}


def test_warmserve_a_second_run_with_the_same_ids_adds_no_model_load(standin) -> None:
    """The manager counts an id toward its model's load only once in its life, but uncounts every
    completion: reused ids drive the load it forecasts from below what is running."""
    url = standin("--ttft-ms", "1", "--gap-ms", "1")
    client = HTTPClient.from_url(url)
    body = json.dumps({"id": 7, "model": "m/0", "prompt": "a a", "max_tokens": 2, "stream": True})
    for _ in range(2):
        resp = client.post("/", body=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 200 and resp.read().endswith(b"#2")
    assert _warmserve_loads(url) == {"standin_warmserve_model_load": -1, "standin_warmserve_engine_load": 0}


def test_serverlessllm_reports_e2e_and_ttft_unavailable_not_zero(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "20", "--gap-ms", "2", "--serverlessllm")
    result = run_live(workload(["qwen2.5-7b"]), "serverlessllm", {"url": url}, tmp_path / "run")
    req = result.requests
    assert (req["status"] == "ok").all()
    assert req["first_token_s"].isna().all()
    assert ((req["end_s"] - req["scheduled_s"]) >= 0.020 + 6 * 0.002).all()
    assert (req["received_tokens"] == 7).all()


def test_serverlessllm_body_is_an_openai_chat_request(standin) -> None:
    url = standin("--serverlessllm")
    path, body = build_request(Endpoint(url=url, protocol="serverlessllm", served_name="m"),
                               request_id=1, input_tokens=20, output_tokens=4, seed=0)
    assert path == "/v1/chat/completions"
    payload = json.loads(body)
    assert payload["messages"][0]["role"] == "user" and "stream" not in payload
    client = HTTPClient.from_url(url)
    resp = client.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    answer = json.loads(resp.read())
    assert "error" not in answer, answer  # every key the adapter sends is one SamplingParams takes
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] == 4
    assert isinstance(answer["created"], float) and answer["choices"][0]["logprobs"] is None


def test_serverlessllm_failures_are_failed_records(standin, tmp_path: Path) -> None:
    """A 200 with an error body (engine not running) and the 500 of an unknown model."""
    url = standin("--ttft-ms", "1", "--gap-ms", "1", "--serverlessllm", "--model", "down",
                  "--error-body-model", "down")
    result = run_live(workload(["down", "nope"], 6), "serverlessllm", {"url": url}, tmp_path / "run")
    req = result.requests.set_index("model")
    assert (result.requests["status"] == "error").all()
    assert req.loc["down", "error"].str.contains("Engine is not running").all()
    assert req.loc["nope", "error"].str.contains("HTTP 500").all()
