"""`compare`: ratios per system, model and metric; --fail-if bounds; exit codes 0 / 1 / 2."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from harness.cli import main
from harness.contracts.errors import WarmbenchError
from harness.report.compare import Bound, compare, failures, parse_bound
from harness.report.load import load_runs
from tests.conftest import ROOT
from tests.results.factory import write_experiment


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in-process (a subprocess per call costs seconds of imports)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["compare", *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_parse_bound() -> None:
    assert parse_bound("p99_ttft_s:+10%", {"p99_ttft_s"}) == Bound("p99_ttft_s", "+", 10.0)
    assert parse_bound("slo_attainment:-2.5", {"slo_attainment"}) == Bound("slo_attainment", "-", 2.5)
    with pytest.raises(WarmbenchError, match="expected METRIC"):
        parse_bound("p99_ttft_s>10", {"p99_ttft_s"})
    with pytest.raises(WarmbenchError, match="unknown metric 'p99_tft_s'"):
        parse_bound("p99_tft_s:+10%", {"p99_ttft_s"})


def test_bounds_cross_only_in_the_bad_direction() -> None:
    up, down = Bound("m", "+", 10.0), Bound("m", "-", 5.0)
    assert up.crossed(1.11) and not up.crossed(1.10) and not up.crossed(0.5)
    assert down.crossed(0.94) and not down.crossed(0.95) and not down.crossed(2.0)
    assert not up.crossed(None) and up.crossed(float("inf"))


def test_identical_experiments_compare_to_ratio_one(tmp_path) -> None:
    base = load_runs(write_experiment(tmp_path / "base"))
    cand = load_runs(write_experiment(tmp_path / "cand"))
    rows = compare(base, cand)
    assert {r["system"] for r in rows} == {"a", "b"}
    assert {r["model"] for r in rows} >= {"all", "llama-2-7b", "llama-2-13b"}
    finite = [r for r in rows if r["ratio"] is not None]
    assert finite and all(r["ratio"] == 1.0 for r in finite)
    assert not failures(rows, [Bound("p99_ttft_s", "+", 0.0)])


def test_cli_exit_codes_and_json(tmp_path) -> None:
    # three seeds: the default gate decides on the interval over seeds, which one seed cannot give
    base = write_experiment(tmp_path / "base", seeds=(0, 1, 2))
    same = write_experiment(tmp_path / "same", seeds=(0, 1, 2))
    slower = write_experiment(tmp_path / "slower", slow={"b": 1.5}, seeds=(0, 1, 2))

    ok = cli(str(base), str(same), "--fail-if", "p99_ttft_s:+10%", "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["failed"] == []
    assert all(set(m) >= {"system", "model", "metric", "base", "candidate", "ratio"} for m in data["metrics"])
    assert all(m["ratio"] == 1.0 for m in data["metrics"] if m["ratio"] is not None)

    bad = cli(str(base), str(slower), "--fail-if", "p50_ttft_s:+10%", "--json")
    assert bad.returncode == 1
    failed = json.loads(bad.stdout)["failed"]
    assert failed and {f["system"] for f in failed} == {"b"} and all(f["ratio"] > 1.1 for f in failed)

    table = cli(str(base), str(slower), "--fail-if", "p50_ttft_s:+10%")
    assert table.returncode == 1 and "FAIL p50_ttft_s:+10%" in table.stdout

    loose = cli(str(base), str(slower), "--fail-if", "p50_ttft_s:+60%")
    assert loose.returncode == 0


def test_cli_bad_input_exits_2(tmp_path) -> None:
    base = write_experiment(tmp_path / "base", seeds=(0, 1))  # two seeds: the default gate can decide
    for args, message in [((str(base), str(tmp_path / "missing")), "does not exist"),
                          ((str(base), str(base), "--fail-if", "p99:10"), "expected METRIC"),
                          ((str(base), str(base), "--fail-if", "nonsense_s:+1%"), "unknown metric")]:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    other = write_experiment(tmp_path / "other", systems=("c", "d"))
    proc = cli(str(base), str(other))
    assert proc.returncode == 2 and "share no run" in " ".join(proc.stderr.split())
    proc = cli(str(base), str(base), "--fail-if", "p99_ttft_s:+10%")
    assert proc.returncode == 0 and "1 bound(s) hold" in proc.stdout


def test_bad_input_through_the_real_entry_point(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "run.py", "compare", str(tmp_path / "a"), str(tmp_path / "b")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_table_lists_each_model_on_request(tmp_path) -> None:
    base = write_experiment(tmp_path / "base")
    proc = cli(str(base), str(base), "--model", "*")
    assert proc.returncode == 0
    assert "llama-2-13b" in proc.stdout and "llama-2-7b" in proc.stdout and "no bounds given" in proc.stdout
    only = cli(str(base), str(base))
    assert "llama-2-13b" not in only.stdout
