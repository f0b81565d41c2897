"""The run record under hostile use: one schema for every kind of run, ids that cannot collide,
resume that reruns whatever changed, old results kept, empty or mostly failed runs not "done",
and Ctrl-C / SIGKILL that stop the whole grid and leave no orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness import experiment, identity, runner
from harness.contracts.errors import InputError
from harness.store import SCHEMA_VERSION, Manifest, find_runs, read_run, write_run
from tests.conftest import ROOT
from tests.hostile.conftest import cli, one_line_error
from tests.results.factory import requests as request_table
from tests.results.factory import synthetic_result

AGREED_KEYS = {"schema_version", "status", "error", "config", "config_sha256", "workload_sha256", "code",
               "requests_summary", "mostly_failed", "started_at", "ended_at", "versions", "host", "workload",
               "point", "seed", "system", "backend", "kind"}

TRACE_ROWS = ["arrival_s,model,input_tokens,output_tokens"] + [
    f"{i * 0.5},{'llama-2-7b' if i % 3 else 'llama-2-13b'},100,20" for i in range(60)]


def trace_experiment(tmp_path: Path, *, models: str = '["llama-2-7b"]', systems: str = '["dedicated"]',
                     extra: str = "") -> Path:
    (tmp_path / "mine.csv").write_text("\n".join(TRACE_ROWS) + "\n")
    path = tmp_path / "exp.toml"
    path.write_text(f'name = "rec"\nmodels = {models}\nsystems = {systems}\n{extra}\n'
                    '[workload]\nspec = "mine.csv"\n')
    return path


@pytest.fixture
def code_r1(monkeypatch):
    """A fixed code identity: other agents edit this tree while the tests run."""
    code = {"revision": "a" * 40, "dirty": False, "diff_sha256": None}
    monkeypatch.setattr(runner, "current_code", lambda: dict(code))
    return code


# ---------------------------------------------------------------- one schema

def test_every_kind_of_run_writes_the_agreed_keys_and_one_workload_hash(tmp_path, code_r1) -> None:
    path = trace_experiment(tmp_path, models='["llama-2-7b", "llama-2-13b"]')
    config, _ = experiment.load(path)
    exp_dir, (outcome,) = runner.run(config, tmp_path / "results")
    code, _, err = cli("sim", "--system", "dedicated", "--workload", str(tmp_path / "mine.csv"),
                       "--out", str(tmp_path / "sim"))
    assert code == 0, err
    from harness.live import run_live
    from workloads import resolve

    whole = resolve(str(tmp_path / "mine.csv"))
    first_3s = type(whole)(whole.requests[whole.requests["arrival_s"] < 3].reset_index(drop=True), whole.meta)
    live = run_live(first_3s, "openai",
                    {"url": "http://127.0.0.1:9", "token_ids": False, "metrics": False, "timeout_s": 2},
                    tmp_path / "live")
    manifests = [json.loads((d / "manifest.json").read_text())
                 for d in (exp_dir / outcome.spec.run_id, tmp_path / "sim", tmp_path / "live")]
    for m in manifests:
        assert AGREED_KEYS <= set(m), AGREED_KEYS - set(m)
        assert m["schema_version"] == SCHEMA_VERSION
        assert set(m["code"]) == {"revision", "dirty", "diff_sha256"}
        assert set(m["requests_summary"]) == {"total", "ok", "failed", "unfinished"}
        Manifest.model_validate(m)
    exp_m, sim_m, live_m = manifests
    # the same requests (the whole file, no filter) hash the same whichever command ran them
    assert exp_m["workload_sha256"] == sim_m["workload_sha256"] == identity.workload_sha256(resolve(str(tmp_path / "mine.csv")))
    assert live_m["workload_sha256"] != sim_m["workload_sha256"]  # 3 s of it, not all
    assert exp_m["requests_summary"]["total"] == 60 and not exp_m["mostly_failed"]
    assert live_m["requests_summary"]["ok"] == 0 and live_m["mostly_failed"] is True  # closed port
    assert live.manifest["mostly_failed"] is True
    # old readers: the keys they read are still there
    assert exp_m["git"]["revision"] == code_r1["revision"] and "trace_sha256" in exp_m
    assert "git_revision" in live_m and live_m["options"]["system"] is not None and live_m["kind"] == "live"


def test_requests_summary_counts_unfinished_as_not_ok(tmp_path) -> None:
    result = synthetic_result(n=10)
    result.requests = request_table([{"status": "ok"}] * 4 + [{"status": "unfinished", "error": ""}] * 5
                                    + [{"status": "timeout"}])
    write_run(result, tmp_path / "r")
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert m["requests_summary"] == {"total": 10, "ok": 4, "failed": 1, "unfinished": 5}
    assert m["mostly_failed"] is True
    result.requests = request_table([{"status": "ok"}] * 6 + [{"status": "error"}] * 4)
    write_run(result, tmp_path / "r2")
    assert read_run(tmp_path / "r2").manifest["mostly_failed"] is False
    result.requests = request_table([])
    write_run(result, tmp_path / "r3")
    assert read_run(tmp_path / "r3").manifest["mostly_failed"] is True  # no requests: nothing measured


def test_workload_hash_sees_every_value_and_the_history() -> None:
    from workloads import resolve

    w = resolve("synthetic-week", models=["llama-2-7b"], total_rps=2.0, duration_s=60.0, history_days=1)
    base = identity.workload_sha256(w)
    for col, value in (("input_tokens", 1), ("arrival_s", 1e-9), ("model", "x")):
        other = w.requests.copy()
        other.loc[len(other) // 2, col] = other.loc[len(other) // 2, col] + value
        assert identity.workload_sha256(other) != identity.workload_sha256(w.requests), col
    hist = w.history.copy()
    hist.loc[0, "mean_concurrency"] += 0.5
    assert identity.workload_sha256(type(w)(w.requests, w.meta, hist)) != base
    assert identity.workload_sha256(type(w)(w.requests.copy(), dict(w.meta), w.history.copy())) == base


# ---------------------------------------------------------------- run ids

@pytest.mark.parametrize("systems, params", [
    ('[{name = "dedicated", label = "a/b"}, {name = "dedicated", label = "a-b"}]', ""),
    ('[{name = "dedicated", label = "Fast"}, {name = "dedicated", label = "fast"}]', ""),  # case-insensitive disks
    ('["dedicated"]', "total_rps = [2, 2.0]"),
    ('[{name = "dedicated", label = "x y"}, {name = "dedicated", label = "x\\ty"}]', ""),
])
def test_colliding_run_ids_are_refused_before_anything_runs(tmp_path, systems, params) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(f'name = "clash"\nsystems = {systems}\n[workload]\nspec = "synthetic-week"\n'
                    f'[workload.params]\nduration_s = 30.0\nhistory_days = 0\n{params}\n')
    config, _ = experiment.load(path)
    with pytest.raises(InputError) as info:
        experiment.grid(config)
    assert info.value.file == str(path) and "same run id" in str(info.value)
    for jobs in ("1", "2"):
        err = one_line_error(*cli("run", str(path), "--results", str(tmp_path / "r"), "--jobs", jobs)[::2])
        assert str(path) in err and "same run id" in err
    assert not (tmp_path / "r").exists()  # nothing ran, nothing was written


def test_floats_that_print_alike_get_distinct_ids(tmp_path, code_r1) -> None:
    path = tmp_path / "exp.toml"
    path.write_text('name = "near"\nsystems = ["dedicated"]\nmodels = ["llama-2-7b"]\n[workload]\n'
                    'spec = "synthetic-week"\n[workload.params]\nduration_s = 30.0\nhistory_days = 0\n'
                    'total_rps = [0.5, 0.5000001, 0.1, 0.1000001]\n')
    config, _ = experiment.load(path)
    specs = experiment.grid(config)
    assert len({s.run_id for s in specs}) == 4
    assert specs[0].run_id == "dedicated_total_rps-0.5_seed-0"  # short where that is exact
    exp_dir, outcomes = runner.run(config, tmp_path / "results", jobs=2)
    assert sorted(p.name for p in find_runs(exp_dir)) == sorted(s.run_id for s in specs)
    assert {o.status for o in outcomes} == {"complete"}


def test_a_label_cannot_make_a_hidden_or_overlong_run_dir(tmp_path) -> None:
    raw = {"name": "x", "workload": {"spec": "synthetic-week"}, "systems": [{"name": "dedicated", "label": "..hidden"}]}
    (spec,) = experiment.grid(experiment.parse(raw, tmp_path / "x.toml"))
    assert not spec.run_id.startswith(".")
    raw["systems"] = [{"name": "dedicated", "label": "L" * 300}]
    with pytest.raises(InputError, match="bytes long"):
        experiment.grid(experiment.parse(raw, tmp_path / "x.toml"))


# ---------------------------------------------------------------- identity and resume

def test_uncommitted_code_change_reruns_and_keeps_the_old_run(tmp_path, monkeypatch, code_r1) -> None:
    config, _ = experiment.load(trace_experiment(tmp_path))
    exp_dir, (first,) = runner.run(config, tmp_path / "results")
    _, (again,) = runner.run(config, tmp_path / "results")
    assert (first.status, again.status) == ("complete", "skipped")
    edited = {**code_r1, "dirty": True, "diff_sha256": "d" * 64}  # e.g. engine_init_s 2 -> 30, not committed
    monkeypatch.setattr(runner, "current_code", lambda: dict(edited))
    _, (rerun,) = runner.run(config, tmp_path / "results")
    assert rerun.status == "complete"
    kept = exp_dir / ".history" / ("a" * 12) / first.spec.run_id
    assert json.loads((kept / "manifest.json").read_text())["code"]["diff_sha256"] is None
    assert json.loads((exp_dir / first.spec.run_id / "manifest.json").read_text())["code"] == edited
    assert [p.name for p in find_runs(exp_dir)] == [first.spec.run_id]  # history is not a run of the experiment
    # back to the committed code: reruns again; the dirty run goes to its own history entry
    monkeypatch.setattr(runner, "current_code", lambda: dict(code_r1))
    assert runner.run(config, tmp_path / "results")[1][0].status == "complete"
    assert (exp_dir / ".history" / f"{'a' * 12}+{'d' * 12}" / first.spec.run_id).is_dir()
    monkeypatch.setattr(runner, "current_code", lambda: dict(edited))
    runner.run(config, tmp_path / "results")
    assert (kept.parent / f"{first.spec.run_id}-2").is_dir() and kept.is_dir()  # never overwritten


def test_an_edited_trace_file_reruns_and_an_unchanged_one_is_skipped(tmp_path, code_r1) -> None:
    config, _ = experiment.load(trace_experiment(tmp_path))
    exp_dir, (first,) = runner.run(config, tmp_path / "results")
    (tmp_path / "mine.csv").write_text("\n".join(TRACE_ROWS) + "\n")  # rewritten, same bytes
    assert runner.run(config, tmp_path / "results")[1][0].status == "skipped"
    rows = TRACE_ROWS[:]
    rows[5] = rows[5].replace(",100,20", ",4000,20")  # one prompt longer
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    (rerun,) = runner.run(config, tmp_path / "results")[1]
    assert rerun.status == "complete"
    old = json.loads(next((exp_dir / ".history").rglob("manifest.json")).read_text())
    new = json.loads((exp_dir / first.spec.run_id / "manifest.json").read_text())
    assert old["workload_sha256"] != new["workload_sha256"] and old["config_sha256"] == new["config_sha256"]
    # a row of another model (filtered out) changes nothing the run replays: still reused
    assert "llama-2-13b" in rows[4]
    rows[4] = rows[4].replace(",100,20", ",999,20")
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    assert runner.run(config, tmp_path / "results")[1][0].status == "skipped"


def test_manifests_from_before_the_schema_are_not_reused(tmp_path, code_r1) -> None:
    config, _ = experiment.load(trace_experiment(tmp_path))
    exp_dir, (first,) = runner.run(config, tmp_path / "results")
    path = exp_dir / first.spec.run_id / "manifest.json"
    old = json.loads(path.read_text())
    for key in ("code", "schema_version", "workload_sha256"):
        old.pop(key)
    old["git"] = {"revision": code_r1["revision"], "dirty": False}
    path.write_text(json.dumps(old))
    assert runner.run(config, tmp_path / "results")[1][0].status == "complete"
    assert (exp_dir / ".history" / ("a" * 12) / first.spec.run_id / "manifest.json").is_file()


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_code_identity_sees_uncommitted_and_untracked_source(tmp_path) -> None:
    repo = tmp_path / "repo"
    (repo / "systems" / "sim").mkdir(parents=True)
    core = repo / "systems" / "sim" / "core.py"
    core.write_text("ENGINE_INIT_S = 2\n")
    (repo / "README.md").write_text("hi\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "c")
    clean = identity.code_identity(repo)
    assert clean["revision"] and clean["dirty"] is False and clean["diff_sha256"] is None
    (repo / "README.md").write_text("docs only\n")
    assert identity.code_identity(repo) == clean  # not code: results stay valid
    core.write_text("ENGINE_INIT_S = 30\n")
    dirty = identity.code_identity(repo)
    assert dirty["dirty"] is True and dirty["revision"] == clean["revision"] and dirty["diff_sha256"]
    core.write_text("ENGINE_INIT_S = 31\n")
    assert identity.code_identity(repo)["diff_sha256"] != dirty["diff_sha256"]
    core.write_text("ENGINE_INIT_S = 2\n")
    (repo / "systems" / "sim" / "new_policy.py").write_text("X = 1\n")
    untracked = identity.code_identity(repo)
    assert untracked["dirty"] is True
    (repo / "systems" / "sim" / "new_policy.py").write_text("X = 2\n")
    assert identity.code_identity(repo)["diff_sha256"] != untracked["diff_sha256"]
    (repo / "systems" / "sim" / "new_policy.py").unlink()
    (repo / "systems" / "notes.txt").write_text("not code\n")
    assert identity.code_identity(repo) == clean


def test_code_identity_outside_git_hashes_the_sources(tmp_path) -> None:
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "a.py").write_text("A = 1\n")
    first = identity.code_identity(tmp_path)
    assert first["revision"] is None and first["diff_sha256"]
    (tmp_path / "harness" / "a.py").write_text("A = 2\n")
    assert identity.code_identity(tmp_path)["diff_sha256"] != first["diff_sha256"]


# ---------------------------------------------------------------- empty and failed runs

def test_a_models_filter_that_removes_every_request_is_an_input_error(tmp_path, code_r1) -> None:
    path = trace_experiment(tmp_path, models='["qwen2.5-72b"]')
    config, _ = experiment.load(path)
    with pytest.raises(InputError) as info:
        runner.run(config, tmp_path / "results")
    assert info.value.field == "models" and info.value.file == str(path)
    err = one_line_error(*cli("run", str(path), "--results", str(tmp_path / "r"))[::2])
    assert "'models'" in err and str(path) in err
    assert not (tmp_path / "r" / "rec").exists() or not find_runs_quiet(tmp_path / "r" / "rec")


def find_runs_quiet(path: Path) -> list[Path]:
    try:
        return find_runs(path)
    except Exception:  # noqa: BLE001 - "holds no runs"
        return []


def test_a_workload_with_no_requests_is_an_input_error(tmp_path, code_r1) -> None:
    (tmp_path / "empty.csv").write_text("arrival_s,model,input_tokens,output_tokens\n")
    (tmp_path / "exp.toml").write_text('name = "e"\nsystems = ["dedicated"]\n[workload]\nspec = "empty.csv"\n')
    code, _, err = cli("run", str(tmp_path / "exp.toml"), "--results", str(tmp_path / "r"))
    err = one_line_error(code, err)
    assert "empty.csv" in err or "exp.toml" in err
    code, _, err = cli("sim", "--system", "dedicated", "--workload", str(tmp_path / "empty.csv"),
                       "--out", str(tmp_path / "s"))
    assert "empty.csv" in one_line_error(code, err)


def unfinished_simulate(real):
    """The simulator, but 3 of every 4 requests left unfinished with no error (a model that fits no GPU)."""
    def simulate(workload, *args, **kwargs):
        result = real(workload, *args, **kwargs)
        req = result.requests
        mask = req.index % 4 != 0
        req.loc[mask, "status"], req.loc[mask, "error"] = "unfinished", ""
        return result
    return simulate


def test_mostly_failed_runs_exit_1_from_sim_and_run(tmp_path, monkeypatch, code_r1) -> None:
    import systems.sim

    monkeypatch.setattr(systems.sim, "simulate", unfinished_simulate(systems.sim.simulate))
    code, out, err = cli("sim", "--system", "dedicated", "--workload", str(trace_experiment(tmp_path).parent / "mine.csv"),
                         "--out", str(tmp_path / "s"))
    assert code == 1 and "mostly failed" in err and "45 unfinished" in err and "Traceback" not in err + out
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["mostly_failed"] is True and m["requests_summary"]["unfinished"] == 45
    code, out, err = cli("run", str(tmp_path / "exp.toml"), "--results", str(tmp_path / "r"), "--no-report")
    assert code == 1 and "mostly failed" in " ".join(out.split()), out
    code, out, _ = cli("run", str(tmp_path / "exp.toml"), "--results", str(tmp_path / "r"), "--no-report")
    assert code == 1 and "already complete" in out  # reused, still reported as mostly failed


# ---------------------------------------------------------------- interrupts

def start_run(tmp_path: Path, experiment_text: str, *args: str, new_session: bool = False) -> subprocess.Popen:
    path = tmp_path / "exp.toml"
    path.write_text(experiment_text)
    return subprocess.Popen([sys.executable, "run.py", "run", str(path), "--results", str(tmp_path / "r"),
                             "--no-report", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=new_session)


def wait_for(predicate, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


#: Four simulator runs of several seconds each (large enough to be interrupted mid-run).
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


def started_runs(exp_dir: Path) -> list[Path]:
    return [p.parent for p in exp_dir.glob("*/manifest.json")]


def test_sigkill_of_run_leaves_no_pool_worker(tmp_path) -> None:
    proc = start_run(tmp_path, SLOW, "--jobs", "2")
    exp_dir = tmp_path / "r" / "slow"
    wait_for(lambda: len(started_runs(exp_dir)) >= 2 or proc.poll() is not None)
    assert proc.poll() is None, proc.stdout.read()
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers
    proc.kill()
    proc.wait(timeout=10)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.pid for p in alive]


@pytest.mark.parametrize("jobs, whole_group", [("1", False), ("2", True)])
def test_ctrl_c_stops_the_whole_grid_with_exit_130(tmp_path, jobs, whole_group) -> None:
    proc = start_run(tmp_path, SLOW, "--jobs", jobs, new_session=whole_group)
    exp_dir = tmp_path / "r" / "slow"
    wait_for(lambda: len(started_runs(exp_dir)) >= int(jobs) or proc.poll() is not None)
    assert proc.poll() is None, proc.stdout.read()
    workers = psutil.Process(proc.pid).children(recursive=True)
    if whole_group:  # a terminal's Ctrl-C reaches every process of the group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    runs = started_runs(exp_dir)
    assert 1 <= len(runs) < 4  # the rest never started
    statuses = [json.loads((r / "manifest.json").read_text()) for r in runs]
    cut = [m for m in statuses if m["status"] == "incomplete"]
    assert cut and all(m["interrupted"] for m in cut)
    assert "not started" in out and "incomplete" in out
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive


LIVE = """
name = "live-stop"
backend = "live"
models = ["m"]
seeds = [0, 1]
systems = [{{name = "openai", options = {{url = "{url}", token_ids = false, ignore_eos = false, metrics = false, timeout_s = 120, drain_s = 120}}}}]
[workload]
spec = "{trace}"
"""


def hanging_trace(tmp_path: Path) -> Path:
    """100 requests to model `m`, which the stand-in started with `--hang-model m` never answers."""
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,model,input_tokens,output_tokens\n"
                    + "".join(f"{i * 0.2},m,10,5\n" for i in range(100)))
    return path


def test_live_grid_ctrl_c_stops_the_grid_and_a_second_cuts_the_drain(tmp_path, standin) -> None:
    url = "http://" + standin("--hang-model", "m")
    proc = start_run(tmp_path, LIVE.format(url=url, trace=hanging_trace(tmp_path)))
    exp_dir = tmp_path / "r" / "live-stop"
    wait_for(lambda: any((r / "requests.jsonl").is_file() for r in started_runs(exp_dir)) or proc.poll() is not None)
    time.sleep(1.5)  # some requests in flight (they hang)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)  # now draining, for up to 120 s
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30, "the second Ctrl-C did not cut the drain"
    assert proc.returncode == 130, out
    (run,) = started_runs(exp_dir)  # the second seed never started
    m = read_run(run).manifest
    assert m["status"] == "incomplete" and m["interrupted"] is True
    assert m["requests_summary"]["total"] == 100  # every request has a record, none lost


def test_drain_ends_at_once_when_cut() -> None:
    import gevent
    from gevent.event import Event
    from gevent.pool import Group

    from harness.loadgen.replay import _drain

    group, cut = Group(), Event()
    group.spawn(gevent.sleep, 30)
    gevent.spawn_later(0.2, cut.set)
    t0 = time.monotonic()
    _drain(group, 30.0, cut)
    assert time.monotonic() - t0 < 2
    group.kill()


def test_results_that_is_a_file_or_unwritable_exits_2(tmp_path, code_r1) -> None:
    path = trace_experiment(tmp_path)
    (tmp_path / "afile").write_text("x")
    err = one_line_error(*cli("run", str(path), "--results", str(tmp_path / "afile"))[::2])
    assert "--results" in err and "afile" in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        err = one_line_error(*cli("run", str(path), "--results", str(locked))[::2])
        assert "--results" in err


def test_two_runs_of_one_experiment_cannot_write_at_once(tmp_path, code_r1) -> None:
    import fcntl

    path = trace_experiment(tmp_path)
    config, _ = experiment.load(path)
    exp_dir = tmp_path / "r" / config.name
    exp_dir.mkdir(parents=True)
    with open(exp_dir / ".lock", "a+") as held:  # another `run` holds it
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.run([sys.executable, "run.py", "run", str(path), "--results", str(tmp_path / "r")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "another `run` (pid 4242)" in " ".join(proc.stderr.split()), proc.stderr
    assert not find_runs_quiet(exp_dir)
    assert runner.run(config, tmp_path / "r")[1][0].status == "complete"  # released: runs


def test_sim_never_overwrites_a_run(tmp_path) -> None:
    wl = trace_experiment(tmp_path).parent / "mine.csv"
    assert cli("sim", "--system", "dedicated", "--workload", str(wl), "--out", str(tmp_path / "s"))[0] == 0
    before = (tmp_path / "s" / "manifest.json").read_text()
    code, _, err = cli("sim", "--system", "vllm-ondemand", "--workload", str(wl), "--out", str(tmp_path / "s"))
    assert "choose a new --out" in one_line_error(code, err)
    assert (tmp_path / "s" / "manifest.json").read_text() == before


def test_replay_ctrl_c_exits_130_and_a_second_cuts_the_drain(tmp_path, standin) -> None:
    url = "http://" + standin("--hang-model", "m")
    trace = hanging_trace(tmp_path)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "run.py", "replay", "--workload", str(trace),
                             "--system", "openai", "--endpoint", url, "--token-ids", "no",
                             "--ignore-eos", "no", "--timeout-s", "120", "--drain-s", "120", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (out / "requests.jsonl").is_file() or proc.poll() is not None)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30 and proc.returncode == 130, text
    m = read_run(out).manifest
    assert m["status"] == "incomplete" and m["interrupted"] is True and m["requests_summary"]["total"] == 100


def test_config_hash_ignores_credentials_but_not_settings():
    """A credential never reaches the manifest, not even as a brute-forceable hash of itself."""
    from harness.identity import config_sha256

    a = {"system": "openai", "options": {"api_key": "sk-one-1234", "endpoint": "http://u:pw1234@h:1/v1", "rate": 1}}
    b = {"system": "openai", "options": {"api_key": "sk-two-5678", "endpoint": "http://u:other99@h:1/v1", "rate": 1}}
    assert config_sha256(a) == config_sha256(b)
    assert config_sha256(a) != config_sha256({**a, "options": {**a["options"], "rate": 2}})
