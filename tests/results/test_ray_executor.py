"""`run --executor ray`: the nightly grid as Ray tasks on a local Ray (2 CPUs) writes the same records
as the local process pool, resumes, records failed runs, stops on Ctrl-C, and leaves no Ray process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from harness import experiment, runner
from tests.conftest import ROOT
from tests.hostile.conftest import cli

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'warmbench[ray]')")

from harness.executors import ray_session  # noqa: E402  (after importorskip: needs ray)

#: Manifest keys that differ between two runs of the same point: when and where it ran.
VOLATILE = {"started_at", "ended_at", "wall_s", "host"}


@pytest.fixture(autouse=True)
def ray_tmp(monkeypatch):
    """Ray's session files in a short folder under /tmp (its socket paths must stay short), removed
    after; and no process this test started (raylet, gcs, workers) may outlive it."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    tmp = tempfile.mkdtemp(prefix="wb-ray-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    yield Path(tmp)
    assert not ray.is_initialized()
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(left, timeout=15)
    shutil.rmtree(tmp, ignore_errors=True)
    assert not alive, [(p.pid, p.name()) for p in alive]


@pytest.fixture(autouse=True)
def fixed_revision(monkeypatch):
    """Others commit to this tree while tests run; resume must not see that as new code."""
    monkeypatch.setattr(runner, "current_code", lambda: {"revision": "r1", "dirty": False, "diff_sha256": None})


def records(exp_dir: Path) -> dict[str, dict[str, object]]:
    """Each run's files as bytes, and its manifest without when and where it ran."""
    out = {}
    for run in sorted(p for p in exp_dir.iterdir() if (p / "manifest.json").is_file()):
        manifest = json.loads((run / "manifest.json").read_text())
        out[run.name] = {"manifest": {k: v for k, v in manifest.items() if k not in VOLATILE},
                         **{f.name: f.read_bytes() for f in sorted(run.iterdir()) if f.name != "manifest.json"}}
    return out


@pytest.mark.parametrize("quick", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["quick", "full"])
def test_ray_writes_the_records_the_local_pool_writes_and_resumes(tmp_path, quick) -> None:
    """`nightly --quick` (4 runs), and in the slow set the full preset (4 systems x 10 seeds)."""
    config, path = experiment.load("nightly", quick=quick)
    n = len(experiment.grid(config))
    local_dir, local = runner.run(config, tmp_path / "local", jobs=2, source=path)
    with ray_session(jobs=2) as pool:
        assert int(ray.cluster_resources()["CPU"]) == 2
        started = []
        ray_dir, remote = runner.run(config, tmp_path / "ray", jobs=pool, source=path, on_start=started.append)
        assert [o.status for o in remote] == ["complete"] * n and len(started) == n >= 4
        mine, theirs = records(ray_dir), records(local_dir)
        assert list(mine) == [o.spec.run_id for o in sorted(local, key=lambda o: o.spec.run_id)]
        for run_id, files in theirs.items():
            assert set(mine[run_id]) == set(files)
            for name, content in files.items():  # requests.parquet byte for byte, summary.json, manifest
                assert mine[run_id][name] == content, (run_id, name)
        assert [o.summary for o in remote] == [o.summary for o in local]

        _, again = runner.run(config, tmp_path / "ray", jobs=pool, source=path)
        assert [o.status for o in again] == ["skipped"] * n
        cut = ray_dir / remote[1].spec.run_id
        (cut / "requests.parquet").write_bytes(b"truncated")  # no longer a result to reuse
        _, resumed = runner.run(config, tmp_path / "ray", jobs=pool, source=path)
    assert [o.status for o in resumed] == ["skipped"] + ["complete"] + ["skipped"] * (n - 2)
    assert records(ray_dir)[cut.name] == theirs[cut.name]
    kept = list((ray_dir / ".history").glob(f"*/{cut.name}/requests.parquet"))
    assert [p.read_bytes() for p in kept] == [b"truncated"]  # the old attempt is kept, not deleted


TWO = """
name = "two"
models = ["llama-2-7b", "llama-2-13b"]
systems = ["dedicated", {name = "vllm-ondemand", options = {no_such_option = 1}}, "muxserve"]
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = 2.0
duration_s = 60.0
history_days = 0
"""


def test_a_failing_run_and_a_dead_worker_become_failed_records(tmp_path) -> None:
    (tmp_path / "two.toml").write_text(TWO)
    config, path = experiment.load(tmp_path / "two.toml")
    with ray_session(jobs=2) as pool:
        exp_dir, outcomes = runner.run(config, tmp_path / "r", jobs=pool, source=path)
        assert [o.status for o in outcomes] == ["complete", "failed", "complete"]
        manifest = json.loads((exp_dir / outcomes[1].spec.run_id / "manifest.json").read_text())
        assert manifest["status"] == "failed" and "no_such_option" in manifest["error"] and outcomes[1].user_error

        real = pool._task

        def dies(spec, code, workload, workload_hash):  # the worker process ends mid-run (OOM kill, segfault)
            if spec.point["system"] == "muxserve":
                os._exit(3)
            from harness.executors import run_and_ship

            return run_and_ship(spec, code, workload, workload_hash)

        pool._task = ray.remote(num_cpus=1, max_retries=0)(dies)
        old = exp_dir / outcomes[2].spec.run_id
        (old / "requests.parquet").unlink()  # redo it
        _, again = runner.run(config, tmp_path / "r", jobs=pool, source=path)
        pool._task = real
    assert [o.status for o in again] == ["skipped", "failed", "failed"]
    assert "WorkerCrashedError" in again[2].error
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "WorkerCrashedError" in manifest["error"]
    assert manifest["run_id"] == old.name and manifest["point"]["system"] == "muxserve"


def test_without_ray_the_executor_is_one_line_and_exit_2(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, _, err = cli("run", "nightly", "--quick", "--executor", "ray", "--results", str(tmp_path / "r"))
    assert code == 2 and "pip install 'warmbench[ray]'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
    code, _, err = cli("run", "nightly", "--quick", "--address", "ray://x:10001", "--results", str(tmp_path / "r"))
    assert code == 2 and "--executor ray" in err


CAPACITY = """
name = "cap"
models = ["llama-2-7b"]
systems = ["warmserve", "vllm-ondemand"]
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = 2.0
duration_s = 30.0
history_days = 1
[capacity]
param = "workload.params.total_rps"
low = 1.0
high = 16.0
attainment = 0.99
tolerance = 0.5
"""


def test_a_capacity_search_on_ray_finds_what_the_pool_finds(tmp_path) -> None:
    """The run command hands the Ray pool to the search too: every round's probes are Ray tasks."""
    (tmp_path / "cap.toml").write_text(CAPACITY)
    found = {}
    for executor in ("local", "ray"):
        code, out, err = cli("run", str(tmp_path / "cap.toml"), "--executor", executor, "--results",
                             str(tmp_path / executor), "--no-report")
        assert code == 0, out + err
        assert "warmserve" in out and "capacity:" in out
        found[executor] = json.loads((tmp_path / executor / "cap" / "capacity.json").read_text())["results"]
    assert found["ray"] == found["local"] and len(found["ray"]) == 2


#: Four simulator runs of several seconds each (as tests/hostile's SLOW): long enough to be cut.
SLOW = """
name = "slow"
models = ["llama-2-7b", "llama-2-13b"]
systems = ["dedicated", "vllm-ondemand"]
seeds = [0, 1]
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = 150.0
duration_s = 3600.0
history_days = 0
"""


@pytest.mark.slow
def test_ctrl_c_cancels_the_ray_tasks_and_exits_130(tmp_path, ray_tmp) -> None:
    (tmp_path / "slow.toml").write_text(SLOW)
    proc = subprocess.Popen([sys.executable, "run.py", "run", str(tmp_path / "slow.toml"), "--results",
                             str(tmp_path / "r"), "--no-report", "--executor", "ray", "--jobs", "2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_ray_workers(proc.pid)) < 2 and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(2.0)  # the two tasks are inside their simulations
        everything = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "not started" in out and "incomplete" in out
    runs = [json.loads(m.read_text()) for m in (tmp_path / "r" / "slow").glob("*/manifest.json")]
    assert 1 <= len(runs) < 4  # the two in flight came back incomplete; the rest never started
    assert all(m["status"] == "incomplete" and m["interrupted"] for m in runs), runs
    _, alive = psutil.wait_procs(everything, timeout=15)
    assert not alive, [(p.pid, p.name()) for p in alive]


def _ray_workers(pid: int) -> list[psutil.Process]:
    """Ray worker processes below `pid` that are running a task (their title names it)."""
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if "run_and_ship" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out
