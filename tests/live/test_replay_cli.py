"""`python run.py replay`: a real run through the CLI, and user errors as one line with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.store import read_run
from tests.conftest import ROOT
from workloads.workload import canonical_frame


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", "replay", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def workload_csv(tmp_path: Path) -> Path:
    path = tmp_path / "w.csv"
    canonical_frame(np.linspace(0, 1, 12), ["a", "b"] * 6, np.full(12, 8), np.full(12, 3)).to_csv(path, index=False)
    return path


def test_replay_writes_a_run_with_the_simulated_runs_tables(standin, workload_csv: Path, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "10", "--gap-ms", "1")
    out = tmp_path / "run"
    proc = replay("--workload", str(workload_csv), "--system", "openai", "--endpoint", f"a={url}",
                  "--endpoint", f"b={url}", "--time-scale", "0.5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "complete: 12 requests, 12 ok" in proc.stderr
    result = read_run(out)
    assert {"requests.parquet", "events.parquet", "memory.parquet", "metrics.parquet"} <= {p.name for p in out.iterdir()}
    assert result.requests["scheduled_s"].max() == pytest.approx(0.5)  # time scale 0.5
    assert result.manifest["system"] == "openai" and result.manifest["status"] == "complete"


def test_duration_replays_only_the_traces_first_seconds_through_the_chat_api(
        standin, workload_csv: Path, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "10", "--gap-ms", "1")
    out = tmp_path / "run"
    proc = replay("--workload", str(workload_csv), "--endpoint", url, "--duration-s", "0.5",
                  "--api", "chat", "--time-scale", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    req = read_run(out).requests
    assert len(req) == 6 and (req["status"] == "ok").all()  # arrivals 0 .. 0.45 s of 0 .. 1 s
    assert req["scheduled_s"].max() == pytest.approx(2 * 5 / 11)  # before the time scale


@pytest.mark.parametrize("args, message", [
    (["--system", "openai", "--endpoint", "a=not-a-url", "--endpoint", "b=http://127.0.0.1:9"], "not an http(s) URL"),
    (["--system", "openai", "--endpoint", "a=http://127.0.0.1:9"], "no endpoint for workload models ['b']"),
    (["--system", "vllm"], "needs --model"),
    (["--system", "vllm", "--model", "a=/nonexistent", "--model", "b=/nonexistent"], "cannot read"),
    (["--system", "openai", "--endpoint", "a=", "--endpoint", "b=http://x:1"], "MODEL=VALUE"),
    (["--endpoint", "http://x:1", "--duration-s", "0"], "argument --duration-s: '0' must be > 0"),
])
def test_bad_input_is_one_line_and_exit_2(workload_csv: Path, tmp_path: Path, args: list[str], message: str) -> None:
    proc = replay("--workload", str(workload_csv), "--out", str(tmp_path / "run"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_workload_file_names_the_file(tmp_path: Path) -> None:
    proc = replay("--workload", str(tmp_path / "nope.csv"), "--system", "openai", "--endpoint", "http://x:1",
                  "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert "nope.csv" in proc.stderr and "Traceback" not in proc.stderr


def test_web_ui_shows_live_ttft_and_e2e_per_model(standin, tmp_path: Path) -> None:
    import json
    import time
    import urllib.request

    from tests.live.conftest import free_port

    url = standin("--ttft-ms", "10", "--gap-ms", "1")
    path = tmp_path / "w.csv"
    canonical_frame(np.linspace(0, 6, 40), ["a", "b"] * 20, np.full(40, 8), np.full(40, 3)).to_csv(path, index=False)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "run.py", "replay", "--workload", str(path), "--system", "openai",
                             "--endpoint", url, "--web-ui", f"127.0.0.1:{port}", "--out", str(tmp_path / "run")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not seen:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/requests", timeout=2) as resp:
                    stats = json.loads(resp.read())
            except OSError:
                continue
            seen = {f"{s['method']} {s['name']}": s["num_requests"] for s in stats["stats"]
                    if s["name"] != "Aggregated" and s["num_requests"] > 0}
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert {"TTFT a", "E2E a"} <= set(seen) or {"TTFT b", "E2E b"} <= set(seen), seen


def test_calibrate_fits_the_simulator_to_a_real_streaming_server(standin, tmp_path: Path) -> None:
    # the stand-in streams at a fixed 40 ms TTFT and 8 ms per token over real HTTP: the fitted
    # cluster must bring the simulated medians to it, which the roofline alone misses
    path = tmp_path / "w.csv"
    canonical_frame(np.linspace(0, 4, 40), ["llama-2-7b", "llama-2-13b"] * 20, np.full(40, 200),
                    np.full(40, 20)).to_csv(path, index=False)
    url = standin("--ttft-ms", "40", "--gap-ms", "8")
    run, toml = tmp_path / "run", tmp_path / "cal.toml"
    assert replay("--workload", str(path), "--endpoint", url, "--out", str(run)).returncode == 0
    proc = subprocess.run([sys.executable, "run.py", "calibrate", str(run), "--gpu", "A100-80GB", "--json",
                           "--out", str(toml)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json
    fit = json.loads(proc.stdout)
    assert fit["converged"] and fit["requests"] == 40 and fit["written"] == str(toml)
    assert fit["engine_init_s"] is None and fit["starts"] == {}  # fixed endpoints: no start to measure, not 0
    for m in fit["models"].values():
        assert m["live_ttft_p50_s"] == pytest.approx(0.040, abs=0.01)
        assert m["ttft_error_after"] < m["ttft_error_before"] and m["tpot_error_after"] < m["tpot_error_before"]
    sim = subprocess.run([sys.executable, "run.py", "sim", "--system", "dedicated", "--workload", str(path),
                          "--cluster", str(toml), "--out", str(tmp_path / "sim")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    q = read_run(tmp_path / "sim").requests
    assert float((q["first_token_s"] - q["scheduled_s"]).median()) == pytest.approx(0.040, rel=0.3)
    # a simulated run is not a live one
    bad = subprocess.run([sys.executable, "run.py", "calibrate", str(tmp_path / "sim"), "--gpu", "A100-80GB"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "calibrate needs a live one" in bad.stderr


def test_printed_ttft_is_summary_jsons_with_failed_requests_counted(standin, tmp_path: Path) -> None:
    # model b's stand-in answers slowly, then cuts every stream after its first tokens: those requests
    # failed but have a TTFT. The screen must show what summary.json holds (harness.metrics: every
    # request with a first token), not a P99 over the ok requests only (the fast model a's).
    import json

    from harness.report.table import fmt

    path = tmp_path / "w.csv"
    canonical_frame(np.linspace(0, 1, 12), ["a", "b"] * 6, np.full(12, 8), np.full(12, 8)).to_csv(path, index=False)
    fast, slow = standin("--ttft-ms", "10", "--gap-ms", "1"), standin("--ttft-ms", "150", "--gap-ms", "1",
                                                                    "--cut-model", "b")
    out = tmp_path / "run"
    proc = replay("--workload", str(path), "--system", "openai", "--endpoint", f"a={fast}",
                  "--endpoint", f"b={slow}", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    req = read_run(out).requests
    failed = req[req["status"] != "ok"]
    assert len(failed) == 6 and failed["first_token_s"].notna().all()
    summary = json.loads((out / "summary.json").read_text())["models"]["all"]
    assert summary["p99_ttft_s"] > 0.1  # b's TTFTs count
    printed = " ".join(proc.stderr.split())
    assert f"P50 {fmt('x_s', summary['p50_ttft_s'])}, P99 {fmt('x_s', summary['p99_ttft_s'])}" in printed, printed
    counts = read_run(out).manifest["requests_summary"]  # the counts are the manifest's
    assert counts == {"total": 12, "ok": 6, "failed": 6, "unfinished": 0}
    assert "12 requests, 6 ok, 6 failed, 0 unfinished" in printed, printed
