"""locust master/worker replay: a master and two worker processes on this machine."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness.loadgen.replay import shard
from harness.store import read_run
from tests.conftest import ROOT
from tests.live.conftest import free_port
from workloads.workload import canonical_frame


def test_shards_deal_requests_round_robin() -> None:
    frame = canonical_frame(np.arange(10.0), "m", np.full(10, 4), np.full(10, 2))
    frame["scheduled_s"] = frame["arrival_s"]
    parts = shard(frame, 3)
    assert [list(p["request_id"]) for p in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def start_replay(url: str, tmp_path: Path, n: int, span_s: float) -> tuple[subprocess.Popen, list, Path]:
    frame = canonical_frame(np.linspace(0, span_s, n), ["a", "b"] * (n // 2), np.full(n, 8), np.full(n, 4))
    workload_csv = tmp_path / "w.csv"
    frame.to_csv(workload_csv, index=False)
    port = free_port()
    run = tmp_path / "run"
    master = subprocess.Popen(
        [sys.executable, "run.py", "replay", "--workload", str(workload_csv), "--system", "openai",
         "--endpoint", url, "--master", "--expect-workers", "2", "--master-port", str(port),
         "--master-bind-host", "127.0.0.1", "--start-delay-s", "2", "--out", str(run)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = [subprocess.Popen([sys.executable, "run.py", "replay", "--worker", "--master-port", str(port)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    return master, workers, run


def finish(master: subprocess.Popen, workers: list) -> str:
    try:
        out, _ = master.communicate(timeout=180)
        for worker in workers:
            worker.wait(timeout=60)
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
    return out


def test_master_merges_the_records_of_two_workers(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "10", "--gap-ms", "2")
    master, workers, run = start_replay(url, tmp_path, 40, 2.0)
    out = finish(master, workers)
    assert master.returncode == 0, out
    result = read_run(run)
    req = result.requests
    assert sorted(req["request_id"]) == list(range(40))
    assert (req["status"] == "ok").all()
    assert (req["received_tokens"] == 4).all()
    assert ((req["first_token_s"] - req["scheduled_s"]) >= 0.010).all()
    workers_info = result.manifest["distributed"]["workers"]
    assert sorted(w["requests"] for w in workers_info.values()) == [20, 20]
    assert all(w.get("done") and not w.get("lost") for w in workers_info.values())


def test_a_lost_worker_leaves_its_requests_accounted_for(standin, tmp_path: Path) -> None:
    url = standin("--ttft-ms", "10", "--gap-ms", "2")
    master, workers, run = start_replay(url, tmp_path, 40, 8.0)
    deadline = time.monotonic() + 120
    while not (run / "requests.jsonl").exists() or not (run / "requests.jsonl").read_text():
        assert time.monotonic() < deadline, "the replay never started"
        time.sleep(0.2)
    workers[1].kill()
    finish(master, workers)
    result = read_run(run)
    req = result.requests
    assert sorted(req["request_id"]) == list(range(40))
    lost = req[req["error"].str.contains("worker was lost")]
    assert 5 <= len(lost) <= 20 and (lost["status"] == "unfinished").all()
    assert (req.loc[~req.index.isin(lost.index), "status"] == "ok").all()
    assert any(w.get("lost") for w in result.manifest["distributed"]["workers"].values())
    assert result.manifest["status"] == "incomplete"
