"""`bench loadgen`'s accounting: the stand-in logs what it delivered, the bench splits the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.bench.loadgen import TTFT_MS, read_server_log, run, ttft_errors
from harness.live import run_live
from workloads.workload import Workload, canonical_frame


def test_standin_logs_each_streams_arrival_and_first_token_by_request_id(standin, tmp_path: Path) -> None:
    log = tmp_path / "first.jsonl"
    url = standin("--ttft-ms", "15", "--gap-ms", "2", "--log", str(log))
    n = 12
    frame = canonical_frame(np.linspace(0, 0.3, n), "m", np.full(n, 8), np.full(n, 4))
    result = run_live(Workload(frame, {"source": "test"}), "openai",
                      {"url": url, "token_ids": True, "ignore_eos": True}, tmp_path / "run")
    server, offset = read_server_log(log, 0)
    assert offset == log.stat().st_size
    assert sorted(server["request_id"]) == list(range(n))  # the X-Request-Id the client sent
    assert (server["first_token_s"] - server["received_s"] >= 0.015).all()
    clock = result.manifest["run_clock"]
    # one clock for both processes: the server got each request after the client sent it, and
    # wrote the first token before the client read it
    req = result.requests.merge(server, on="request_id", suffixes=("", "_srv"))
    t0 = clock["t0_perf_counter_s"]
    assert (req["received_s"] - t0 >= req["sent_s"]).all()
    assert (req["first_token_s_srv"] - t0 <= req["first_token_s"]).all()


def test_standin_logs_warmserve_requests_by_their_body_id(standin, tmp_path: Path) -> None:
    log = tmp_path / "first.jsonl"
    url = standin("--ttft-ms", "5", "--gap-ms", "1", "--log", str(log))
    frame = canonical_frame(np.linspace(0, 0.1, 3), "m", np.full(3, 30), np.full(3, 3))
    # offset 0: the run's own ids on the wire (by default each run offsets them: issue 17)
    run_live(Workload(frame, {"source": "test"}), "warmserve", {"url": url, "request_id_offset": 0},
             tmp_path / "run")
    server, _ = read_server_log(log, 0)
    assert sorted(server["request_id"]) == [0, 1, 2]


def test_errors_split_into_the_clients_own_and_the_servers_lateness() -> None:
    requests = pd.DataFrame({
        "request_id": [0, 1, 2], "status": ["ok", "ok", "error"],
        "scheduled_s": [1.0, 2.0, 3.0], "sent_s": [1.001, 2.002, 3.0],
        "first_token_s": [1.030, 2.024, float("nan")]})
    t0 = 100.0  # the run's t=0 on the server's clock
    server = pd.DataFrame({"request_id": [0, 1], "received_s": [t0 + 1.002, t0 + 2.003],
                           "first_token_s": [t0 + 1.027, t0 + 2.0231]})
    err = ttft_errors(requests, server, t0).set_index("request_id")
    assert list(err.index) == [0, 1]  # failed requests have no TTFT
    np.testing.assert_allclose(err["server_ttft_s"], [0.025, 0.0201], atol=1e-9)
    np.testing.assert_allclose(err["own_error_s"], [0.005, 0.0039], atol=1e-9)
    np.testing.assert_allclose(err["lateness_s"], err["server_ttft_s"] - TTFT_MS / 1000)
    np.testing.assert_allclose(err["vs_nominal_s"], err["own_error_s"] + err["lateness_s"])
    # own error = send lag + the request's trip + the delay before the client read the token
    np.testing.assert_allclose(err["send_lag_s"] + err["trip_s"] + err["read_delay_s"], err["own_error_s"])


def test_bench_reports_both_errors_and_cpu_per_process() -> None:
    result = run(quick=True, rates_rps=(20,), duration_s=1.0)
    (row,) = result["rates"]
    assert row["ok"] == row["requests"] == row["server_logged"] == 20
    for key in ("send_lag_p99_ms", "ttft_error_p99_ms", "ttft_error_vs_nominal_p99_ms", "server_lateness_p99_ms",
                "client_cpu_us_per_token", "server_cpu_us_per_token", "other_cpu_percent"):
        assert np.isfinite(row[key]), key
    assert row["tokens"] == 20 * 128
    assert "own error" in result["judged"]
