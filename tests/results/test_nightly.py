"""`nightly`: run, history page, gate against the previous revision's runs; exit 1 only on a decided regression."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import nightly, runner
from tests.hostile.conftest import cli

#: Two systems x two seeds, one minute of the synthetic week: a few seconds a night.
NIGHT = """
name = "night"
models = ["llama-2-7b", "llama-2-13b"]
systems = ["dedicated", {{name = "vllm-ondemand", options = {{engine_init_s = {init}}}}}]
seeds = {seeds}
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = 4.0
duration_s = 120.0
history_days = 0
"""


def night(tmp_path: Path, monkeypatch, revision: str, *, init: float = 10.0, seeds: str = "[0, 1]",
          extra: tuple[str, ...] = ()) -> tuple[int, str]:
    """One night at `revision` (the code identity every run records)."""
    monkeypatch.setattr(runner, "current_code", lambda: {"revision": revision, "dirty": False, "diff_sha256": None})
    path = tmp_path / "night.toml"
    path.write_text(NIGHT.format(init=init, seeds=seeds))
    code, out, err = cli("nightly", "--experiment", str(path), "--results", str(tmp_path / "r"), "--jobs", "1", *extra)
    return code, out + err


def test_first_night_then_unchanged_then_a_regression(tmp_path, monkeypatch) -> None:
    exp_dir = tmp_path / "r" / "night"
    code, out = night(tmp_path, monkeypatch, "a" * 40)
    assert code == 0, out
    assert "nothing to compare" in out and (exp_dir / "history.html").is_file()

    code, out = night(tmp_path, monkeypatch, "b" * 40)  # new code, same results: the gate holds
    assert code == 0, out
    assert "previous revision aaaaaaaaaaaa (4 complete runs" in out
    assert sorted(p.name for p in (exp_dir / ".history").iterdir()) == ["aaaaaaaaaaaa"]

    code, out = night(tmp_path, monkeypatch, "c" * 40, init=40.0)  # engine start 30 s slower: P99 TTFT up
    assert code == 1, out
    assert "previous revision bbbbbbbbbbbb" in out
    history = json.loads((exp_dir / "history.json").read_text())
    assert len(history["revisions"]) == 3


def test_an_inconclusive_gate_does_not_fail_the_night(tmp_path, monkeypatch) -> None:
    assert night(tmp_path, monkeypatch, "a" * 40, seeds="[0]")[0] == 0
    code, out = night(tmp_path, monkeypatch, "b" * 40, seeds="[0]")  # one seed: no interval to decide on
    assert code == 0, out
    assert "gate inconclusive" in out


def test_bad_input_is_exit_2_before_anything_runs(tmp_path) -> None:
    code, _, err = cli("nightly", "--experiment", str(tmp_path / "none.toml"), "--results", str(tmp_path / "r"))
    assert code == 2 and "none.toml" in err
    assert not (tmp_path / "r").exists()


def test_a_malformed_bound_is_exit_2_before_the_preset_runs(tmp_path) -> None:
    """`--fail-if foo` ran the whole preset, then (first night: nothing to compare) exited 0."""
    for bound in ("foo", "p99_ttft_s:+x%", "no_such_metric:+10%"):
        code, _, err = cli("nightly", "--quick", "--fail-if", bound, "--results", str(tmp_path / "r"))
        assert code == 2 and "--fail-if" in err, (bound, err)
    assert not (tmp_path / "r").exists()


def test_the_previous_revision_is_the_newest_archived_code_with_complete_runs(tmp_path) -> None:
    exp = tmp_path / "exp"

    def put(where: str, run_id: str, revision: str, started: str, status: str = "complete") -> None:
        folder = exp / where
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({
            "run_id": run_id, "status": status, "started_at": started,
            "code": {"revision": revision, "dirty": False, "diff_sha256": None}}))

    put("s_seed-0", "s_seed-0", "d" * 40, "2026-01-04T00:00:00")                  # the current runs
    put(".history/aaaaaaaaaaaa/s_seed-0", "s_seed-0", "a" * 40, "2026-01-01T00:00:00")
    put(".history/cccccccccccc/s_seed-0", "s_seed-0", "c" * 40, "2026-01-03T00:00:00", "failed")  # no reference
    put(".history/bbbbbbbbbbbb/s_seed-0", "s_seed-0", "b" * 40, "2026-01-02T00:00:00", "incomplete")
    put(".history/bbbbbbbbbbbb/s_seed-0-2", "s_seed-0", "b" * 40, "2026-01-02T01:00:00")
    put(".history/dddddddddddd/s_seed-0", "s_seed-0", "d" * 40, "2026-01-04T00:00:00")  # an earlier try of tonight's code
    previous = nightly.previous_revision(exp)
    assert previous is not None and previous.key == "bbbbbbbbbbbb"
    assert previous.runs == {"s_seed-0": exp / ".history/bbbbbbbbbbbb/s_seed-0-2"}
    base = nightly.gather(previous, tmp_path / "base")
    assert json.loads((base / "s_seed-0" / "manifest.json").read_text())["started_at"] == "2026-01-02T01:00:00"
    shutil.rmtree(exp / ".history")
    assert nightly.previous_revision(exp) is None


def test_the_ci_workflow_parses_runs_make_nightly_and_keeps_the_history() -> None:
    yaml = pytest.importorskip("yaml")
    root = Path(__file__).resolve().parents[2]
    flow = yaml.safe_load((root / ".github" / "workflows" / "nightly.yml").read_text())
    assert flow[True]["schedule"][0]["cron"]  # YAML 1.1 reads the key `on` as True
    steps = flow["jobs"]["nightly"]["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    assert runs == ["make nightly"]
    cached = [s["with"]["path"] for s in steps if str(s.get("uses", "")).startswith("actions/cache/")]
    assert cached == ["results/nightly", "results/nightly"]  # restored before, saved after
    uploaded = next(s["with"]["path"] for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert "results/nightly/history.html" in uploaded
    recipe = (root / "Makefile").read_text().split("\nnightly:", 1)[1].split("\n\n", 1)[0]
    assert "run.py nightly" in recipe
