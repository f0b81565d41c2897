"""The load generator against a real HTTP server in its own process (the project's stand-in)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import gevent
import numpy as np
import pandas as pd
import pytest

from harness.contracts.errors import WarmbenchError
from harness.live import run_live
from harness.loadgen.telemetry import histogram_buckets, parse_prometheus
from harness.store import read_run
from tests.conftest import ROOT
from workloads.workload import Workload, canonical_frame


def workload(models: list[str], n: int, span_s: float, input_tokens: int = 12, output_tokens: int = 6) -> Workload:
    frame = canonical_frame(np.linspace(0.0, span_s, n), [models[i % len(models)] for i in range(n)],
                            np.full(n, input_tokens), np.full(n, output_tokens))
    return Workload(frame, {"source": "test"})


def test_every_fault_becomes_a_record_and_the_replay_goes_on(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "20", "--gap-ms", "2", "--error-model", "err", "--cut-model", "cut",
                  "--hang-model", "hang")
    models = ["ok", "err", "cut", "hang", "refused"]
    w = workload(models, 25, 1.0)
    endpoints = {m: url for m in models[:4]} | {"refused": "http://127.0.0.1:9"}
    result = run_live(w, "openai", {"endpoints": endpoints, "timeout_s": 1.5, "token_ids": True}, tmp_path / "run")
    req = result.requests
    assert sorted(req["request_id"]) == list(range(25))
    by_model = req.groupby("model")
    assert set(by_model.get_group("ok")["status"]) == {"ok"}
    assert (by_model.get_group("ok")["received_tokens"] == 6).all()
    err = by_model.get_group("err")
    assert set(err["status"]) == {"error"} and err["error"].str.startswith("HTTP 500").all()
    cut = by_model.get_group("cut")
    assert set(cut["status"]) == {"error"} and cut["error"].str.contains("stream cut").all()
    assert (cut["received_tokens"] == 3).all()  # tokens before the cut are kept
    assert set(by_model.get_group("hang")["status"]) == {"timeout"}
    refused = by_model.get_group("refused")
    assert set(refused["error"]) == {"connection refused"}
    assert refused["first_token_s"].isna().all()  # never 0
    assert result.manifest["status"] == "complete"


def test_ttft_counts_from_the_scheduled_time_and_is_never_below_the_server_ttft(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "30", "--gap-ms", "3")
    result = run_live(workload(["m"], 40, 1.0), "openai", {"url": url, "token_ids": True}, tmp_path / "run")
    ok = result.requests
    ttft = ok["first_token_s"] - ok["scheduled_s"]
    assert (ok["status"] == "ok").all()
    assert (ttft >= 0.030).all()
    assert (ok["sent_s"] >= ok["scheduled_s"]).all()
    assert all(len(gaps) == 5 for gaps in ok["itl_s"])
    assert (ok["server_input_tokens"] == 12).all()  # token-id prompt: exact input length


def test_open_loop_sends_on_time_while_earlier_requests_hang(standin, tmp_path: Path) -> None:
    """A hung server must not hold back later sends (no coordinated omission)."""
    url = standin("--hang-model", "slow")
    w = workload(["slow"], 60, 1.5)
    result = run_live(w, "openai", {"url": url, "timeout_s": 2.5, "token_ids": False}, tmp_path / "run")
    lag = result.requests["sent_s"] - result.requests["scheduled_s"]
    assert lag.max() < 0.05, lag.max()
    assert (result.requests["status"] == "timeout").all()


def test_records_are_on_disk_while_the_replay_runs(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "5", "--gap-ms", "1")
    run = tmp_path / "run"
    seen: list[int] = []

    def peek() -> None:
        gevent.sleep(2.0)
        path = run / "requests.jsonl"
        seen.append(len(path.read_text().splitlines()) if path.exists() else -1)
        seen.append(json.loads((run / "manifest.json").read_text())["status"] == "incomplete")  # until the end

    g = gevent.spawn(peek)
    run_live(workload(["m"], 30, 3.0), "openai", {"url": url}, run)
    g.join()
    assert seen[0] >= 10  # about 18 had ended by t=2 s; flushed within a second
    assert seen[1] is True


def test_ctrl_c_stops_sending_drains_and_leaves_a_readable_incomplete_run(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "5", "--gap-ms", "200")
    run = tmp_path / "run"
    script = (
        "import numpy as np, sys\n"
        "from pathlib import Path\n"
        "from workloads.workload import Workload, canonical_frame\n"
        "from harness.live import run_live\n"
        "f = canonical_frame(np.linspace(0, 20, 100), 'm', np.full(100, 8), np.full(100, 50))\n"
        f"run_live(Workload(f, {{}}), 'openai', {{'url': '{url}', 'drain_s': 1.0}}, Path(sys.argv[1]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(run)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (run / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    result = read_run(run)
    assert result.manifest["status"] == "incomplete"
    req = result.requests
    assert sorted(req["request_id"]) == list(range(100))  # every request accounted for
    counts = req["status"].value_counts().to_dict()
    assert counts.get("unfinished", 0) >= 80  # never sent
    assert counts.get("cancelled", 0) >= 1  # in flight when the drain ran out (10 s streams)
    assert req.loc[req["status"] == "unfinished", "sent_s"].isna().all()


def test_client_overload_flag_follows_the_threshold(standin, tmp_path: Path) -> None:
    url = standin()
    result = run_live(workload(["m"], 10, 0.2), "openai", {"url": url, "overload_threshold_ms": 0.000001},
                      tmp_path / "run")
    client = result.manifest["client"]
    assert client["overloaded"] is True and client["send_lag_p99_ms"] > 0.000001
    # one send-lag computation: the manifest's client block is summary.json's, in ms
    lag = json.loads((tmp_path / "run" / "summary.json").read_text())["models"]["all"]
    assert client["send_lag_p50_ms"] == pytest.approx(lag["p50_send_lag_s"] * 1000)
    assert client["send_lag_p99_ms"] == pytest.approx(lag["p99_send_lag_s"] * 1000)
    assert client["send_lag_max_ms"] == pytest.approx(lag["max_send_lag_s"] * 1000)
    assert any("client overloaded" in w for w in result.manifest["warnings"])
    assert "GPU memory: not measured (no GPU)" in result.manifest["warnings"] or result.manifest["gpu_memory"] == "measured (NVML)"


def test_text_prompts_when_the_server_refuses_token_ids(standin, tmp_path: Path) -> None:
    url = standin("--no-token-ids")
    result = run_live(workload(["m"], 5, 0.2, input_tokens=9), "openai", {"url": url}, tmp_path / "run")
    assert (result.requests["status"] == "ok").all()
    assert result.manifest["system_detail"]["token_ids"] == {"m": False}
    assert (result.requests["server_input_tokens"] == 9).all()  # the stand-in counts words


def test_a_server_that_refuses_vllm_fields_gets_requests_without_them(standin, tmp_path: Path) -> None:
    # as OpenAI's API: HTTP 400 for ignore_eos / min_tokens; the probe drops them, says so, and
    # the replay succeeds; with ignore_eos forced on, every request fails with the server's text
    url = standin("--strict")
    result = run_live(workload(["m"], 5, 0.2, input_tokens=9), "openai", {"url": url}, tmp_path / "run")
    assert (result.requests["status"] == "ok").all(), result.requests["error"].tolist()
    detail = result.manifest["system_detail"]
    assert detail["ignore_eos"] == {"m": False} and detail["token_ids"] == {"m": True}
    probes = result.events[result.events["kind"] == "probe"]
    assert probes["detail"].str.contains("output lengths not pinned").all() and len(probes) == 1
    forced = run_live(workload(["m"], 3, 0.2), "openai", {"url": url, "ignore_eos": True}, tmp_path / "forced")
    assert (forced.requests["status"] == "error").all()
    assert forced.requests["error"].str.contains("HTTP 400.*Unrecognized request argument", regex=True).all()


def test_chat_api_ttft_is_the_first_content_not_the_role_event(standin, tmp_path: Path) -> None:
    # the stand-in sends the role event at once and the first content 40 ms later
    url = standin("--ttft-ms", "40", "--gap-ms", "2", "--strict")
    result = run_live(workload(["m"], 6, 0.3, input_tokens=20, output_tokens=5), "openai",
                      {"url": url, "api": "chat"}, tmp_path / "run")
    req = result.requests
    assert (req["status"] == "ok").all(), req["error"].tolist()
    assert ((req["first_token_s"] - req["scheduled_s"]) >= 0.040).all()
    assert (req["received_tokens"] == 5).all()
    assert req["itl_s"].map(len).eq(4).all()  # five tokens, four gaps: the role event is none
    assert (req["server_input_tokens"] == 12).all()  # the server's own count, from usage
    assert result.manifest["system_detail"]["ignore_eos"] == {"m": False}  # --strict refused them


def test_metrics_are_scraped_onto_the_run_timeline(standin, tmp_path: Path) -> None:
    url = standin()
    run_live(workload(["m"], 10, 1.5), "openai", {"url": url, "scrape_period_s": 0.5}, tmp_path / "run")
    metrics = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    served = metrics[metrics["name"] == "standin_requests_total"]
    assert served["time_s"].nunique() >= 3
    assert served["value"].max() == 11  # 10 requests plus the token-id probe


def test_bad_options_are_user_errors(tmp_path: Path) -> None:
    w = workload(["a", "b"], 4, 0.1)
    with pytest.raises(WarmbenchError, match="no endpoint for workload models"):
        run_live(w, "openai", {"endpoints": {"a": "http://127.0.0.1:9"}}, tmp_path / "r1")
    with pytest.raises(WarmbenchError, match="timeout_s"):
        run_live(w, "openai", {"url": "http://x:1", "timeout_s": -1}, tmp_path / "r2")
    with pytest.raises(WarmbenchError, match="unknown live system"):
        run_live(w, "nope", {}, tmp_path / "r3")


def test_prometheus_parser_reads_histograms() -> None:
    text = ('# HELP x\nvllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="a"} 3.0\n'
            'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="a"} 5.0\n'
            'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="b"} 7.0\n')
    buckets = histogram_buckets(parse_prometheus(text), "vllm:time_to_first_token_seconds", model_name="a")
    assert buckets == {0.1: 3.0, math.inf: 5.0}


def test_a_cut_stream_never_poisons_the_next_request_on_a_kept_alive_connection(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "5", "--gap-ms", "1", "--cut-model", "cut")
    w = workload(["cut", "ok"], 10, 2.0)  # one at a time: each reuses the pooled connection
    result = run_live(w, "openai", {"url": url, "max_connections": 1, "token_ids": False}, tmp_path / "run")
    req = result.requests
    assert (req.loc[req["model"] == "ok", "status"] == "ok").all(), req["error"].tolist()
    assert (req.loc[req["model"] == "cut", "status"] == "error").all()


def test_a_stop_while_requests_wait_for_their_time_leaves_them_unsent(standin) -> None:
    # Greenlets start LEAD_S before their time; a stop in that lead must not send them.
    from harness.contracts.endpoint import Endpoint
    from harness.loadgen import Clock, ReplayConfig, StaticRouter, replay
    from harness.loadgen.recorder import JsonlRecorder
    from harness.loadgen.replay import LEAD_S

    url = standin("--ttft-ms", "1", "--gap-ms", "1")
    due_s = 0.3
    schedule = pd.DataFrame({"request_id": range(11), "model": "m",
                             "scheduled_s": [0.0] + [due_s] * 10, "input_tokens": 4, "output_tokens": 2})
    stop = gevent.event.Event()
    gevent.spawn_later(due_s - LEAD_S / 2, stop.set)  # after the ten were handed out, before their time
    recorder = JsonlRecorder(None)
    stats = replay(schedule, StaticRouter({"m": Endpoint(url)}), recorder, Clock(), ReplayConfig(drain_s=2.0), stop)
    by_id = {r["request_id"]: r for r in recorder.records}
    assert sorted(by_id) == list(range(11))
    assert by_id[0]["status"] == "ok"
    unsent = [by_id[i] for i in range(1, 11)]
    assert all(r["status"] == "unfinished" and math.isnan(r["sent_s"]) for r in unsent)
    assert all(r["error"].startswith("not sent") for r in unsent)
    assert stats.n_unsent == 10 and stats.stopped_early


def test_a_body_built_ahead_for_another_endpoint_is_rebuilt_for_the_one_acquired(standin) -> None:
    # bodies are built in the lead time for router.endpoints[model]; a router that answers a
    # different endpoint at send time (another served name here) must get its own body
    import urllib.request

    from harness.contracts.endpoint import Endpoint
    from harness.loadgen import Clock, ReplayConfig, replay
    from harness.loadgen.recorder import JsonlRecorder

    url = standin("--ttft-ms", "1", "--gap-ms", "1")

    class Moving:
        endpoints = {"m": Endpoint(url, served_name="guessed")}

        def acquire(self, model: str):
            return Endpoint(url, served_name="acquired"), "", 0.0

        def release(self, model: str) -> None:
            pass

    schedule = pd.DataFrame({"request_id": range(3), "model": "m", "scheduled_s": [0.0, 0.06, 0.12],
                             "input_tokens": 4, "output_tokens": 2})
    recorder = JsonlRecorder(None)
    replay(schedule, Moving(), recorder, Clock(), ReplayConfig())
    assert all(r["status"] == "ok" for r in recorder.records)
    metrics = urllib.request.urlopen(f"{url}/metrics").read().decode()
    assert 'model_name="acquired"} 3' in metrics and "guessed" not in metrics
