"""Hostile inputs for the regression gate (`compare`) and the report's reading of records.

The gate must fail (exit 1) whenever the candidate cannot be trusted, whatever its numbers, and
every broken file must be bad input (exit 2, one line naming the file), never a traceback and
never exit 1, which a nightly script reads as "regression".

The factory's experiments hold one seed per sweep point, and one seed cannot decide the default
interval gate (exit 3, tests/results/test_gate_stats.py): these tests run `--mode per-seed`, where
a whole candidate passes; the trust checks are the same in both modes (test_gate_stats.py checks
them under the default).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report.document import build
from harness.report.load import load_runs
from harness.report.table import rich_tables
from harness.store import write_run
from tests.hostile.conftest import cli_result as cli
from tests.results.factory import synthetic_result, write_experiment

BOUND = "p99_ttft_s:+10%"
PER_SEED = ("--mode", "per-seed")  # one seed per point: see the module docstring
RUN = "b_total_rps-5_seed-0"  # one run of the factory's default grid


def bad_input(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2 with one line on stderr that says each of `needles` (a file name, a key)."""
    assert proc.returncode == 2, (proc.args, proc.returncode, proc.stdout[-2000:], proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def gate(base: Path, cand: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`compare --fail-if` in text and in JSON; both must agree on the exit code."""
    text = cli("compare", str(base), str(cand), "--fail-if", BOUND, *PER_SEED, *extra)
    data = cli("compare", str(base), str(cand), "--fail-if", BOUND, "--json", *PER_SEED, *extra)
    assert text.returncode == data.returncode, (text.stdout, data.stdout)
    assert "Traceback" not in text.stderr + data.stderr
    return text, json.loads(data.stdout)


def kinds(data: dict) -> list[str]:
    return sorted(p["kind"] for p in data["problems"])


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def old_manifest(run: Path) -> None:
    """Strip what only new manifests record, as a run written by an older warmbench would look."""
    edit_json(run / "manifest.json", mostly_failed=..., requests_summary=..., schema_version=...,
              workload_sha256=...)


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    return write_experiment(tmp_path / "base"), write_experiment(tmp_path / "cand")


# --- the gate holds for a whole, identical candidate (so the failures below are the gate's doing)

def test_identical_candidate_passes(pair) -> None:
    base, cand = pair
    text, data = gate(base, cand)
    assert text.returncode == 0 and "1 bound(s) hold" in text.stdout
    assert data["passed"] is True and data["problems"] == [] and data["failed"] == []


# --- missing candidate runs

def test_three_of_four_candidate_runs_missing_fails(pair) -> None:
    base, cand = pair
    ids = json.loads((cand / "experiment.json").read_text())["runs"]
    for run_id in ids[1:]:
        shutil.rmtree(cand / run_id)
    text, data = gate(base, cand)
    assert text.returncode == 1 and "bound(s) hold" not in text.stdout
    assert kinds(data) == ["missing"] * 3 and data["passed"] is False
    assert {p["run_id"] for p in data["problems"]} == set(ids[1:])
    fail_lines = [line for line in text.stdout.splitlines() if line.startswith("FAIL missing")]
    assert len(fail_lines) == 3 and all(any(i in line for i in ids[1:]) for line in fail_lines)


def test_missing_run_fails_without_experiment_json_too(pair) -> None:
    base, cand = pair
    (cand / "experiment.json").unlink()
    shutil.rmtree(cand / RUN)
    _, data = gate(base, cand)
    assert kinds(data) == ["missing"] and data["problems"][0]["run_id"] == RUN


def test_single_run_pairs_as_is_but_its_grid_is_checked(tmp_path, pair) -> None:
    base, cand = pair
    ids = json.loads((cand / "experiment.json").read_text())["runs"]
    for run_id in ids[1:]:
        shutil.rmtree(cand / run_id)  # the candidate holds one run, its grid four
    _, data = gate(base / ids[0], cand)
    assert kinds(data) == ["missing"] * 3


def test_extra_candidate_runs_are_noted_not_failed(tmp_path) -> None:
    base = write_experiment(tmp_path / "base", systems=("a",))
    cand = write_experiment(tmp_path / "cand", systems=("a", "b"))
    text, data = gate(base, cand)
    assert text.returncode == 0 and data["problems"] == []
    assert sum("no base run" in n for n in data["notes"]) == 2 and "no base run" in text.stdout


# --- failed, incomplete and mostly failed runs

@pytest.mark.parametrize("status, kind", [("failed", "candidate_failed"), ("incomplete", "candidate_incomplete"),
                                          ("running", "candidate_incomplete"), (None, "candidate_incomplete")])
def test_candidate_run_not_complete_fails(pair, status, kind) -> None:
    base, cand = pair
    edit_json(cand / RUN / "manifest.json", status=status if status else ..., error="SimError: boom")
    text, data = gate(base, cand)
    assert text.returncode == 1 and kinds(data) == [kind]
    assert data["problems"][0]["run_id"] == RUN and "boom" in data["problems"][0]["message"]


def test_candidate_without_its_request_table_is_incomplete(pair) -> None:
    base, cand = pair
    (cand / RUN / "requests.parquet").unlink()
    _, data = gate(base, cand)
    assert kinds(data) == ["candidate_incomplete"]


def _all_failed(run: Path, n: int = 200) -> None:
    """Rewrite `run` as a run where every one of `n` requests failed, as a dead endpoint gives."""
    manifest = json.loads((run / "manifest.json").read_text())
    result = synthetic_result(manifest["system"], n=n)
    result.requests["status"] = "error"
    result.requests["first_token_s"] = float("nan")
    result.requests["end_s"] = float("nan")
    result.manifest = {k: v for k, v in manifest.items() if k not in ("mostly_failed", "requests_summary")}
    write_run(result, run)


@pytest.mark.parametrize("old", [False, True])
def test_candidate_where_every_request_failed_fails(pair, old) -> None:
    base, cand = pair
    _all_failed(cand / RUN)
    if old:
        old_manifest(cand / RUN)  # no mostly_failed key: computed from the summary
    text, data = gate(base, cand)
    assert text.returncode == 1 and kinds(data) == ["candidate_mostly_failed"]
    assert "200 of 200 requests not ok" in data["problems"][0]["message"]


def test_mostly_failed_flag_and_zero_requests(pair) -> None:
    base, cand = pair
    edit_json(cand / RUN / "manifest.json", mostly_failed=True)
    _, data = gate(base, cand)
    assert kinds(data) == ["candidate_mostly_failed"]
    edit_json(cand / RUN / "manifest.json", mostly_failed=..., requests_summary={"total": 0, "ok": 0})
    _, data = gate(base, cand)
    assert kinds(data) == ["candidate_mostly_failed"] and "no requests" in data["problems"][0]["message"]
    edit_json(cand / RUN / "manifest.json", requests_summary={"total": 200, "ok": 100})  # half: not most
    assert gate(base, cand)[0].returncode == 0
    edit_json(cand / RUN / "manifest.json", mostly_failed=False, requests_summary={"total": 200, "ok": 1})
    _, data = gate(base, cand)  # a flag its own counts contradict is not believed
    assert kinds(data) == ["candidate_mostly_failed"] and "199 of 200" in data["problems"][0]["message"]


def test_base_run_failed_is_said_and_fails(pair) -> None:
    base, cand = pair
    edit_json(base / RUN / "manifest.json", status="failed", error="SimError: boom")
    text, data = gate(base, cand)
    assert text.returncode == 1 and kinds(data) == ["base_failed"]
    assert "nothing trustworthy" in data["problems"][0]["message"]


# --- metrics that became unmeasurable

def test_bound_metric_null_on_candidate_fails(pair) -> None:
    base, cand = pair
    summary = json.loads((cand / RUN / "summary.json").read_text())
    summary["models"]["all"]["p99_ttft_s"] = None
    (cand / RUN / "summary.json").write_text(json.dumps(summary))
    text, data = gate(base, cand)
    assert text.returncode == 1 and kinds(data) == ["unmeasurable"] and "p99_ttft_s" in text.stdout
    # a metric no bound names does not fail the gate
    assert cli("compare", str(base), str(cand), "--fail-if", "p50_ttft_s:+10%", *PER_SEED).returncode == 0


def test_model_missing_on_candidate_is_unmeasurable(pair) -> None:
    base, cand = pair
    summary = json.loads((cand / RUN / "summary.json").read_text())
    del summary["models"]["llama-2-13b"]
    (cand / RUN / "summary.json").write_text(json.dumps(summary))
    _, data = gate(base, cand)
    assert kinds(data) == ["unmeasurable"] and "llama-2-13b" in data["problems"][0]["message"]


# --- workloads

@pytest.mark.parametrize("key", ["workload_sha256", "workload"])
def test_differing_workloads_fail_unless_allowed(pair, key) -> None:
    base, cand = pair
    for side, sha in ((base, "a" * 64), (cand, "b" * 64)):
        for run in load_runs(side):
            old_manifest(run.path)
            edit_json(run.path / "manifest.json", **{key: sha if key == "workload_sha256" else {"sha256": sha}})
    text, data = gate(base, cand)
    assert text.returncode == 1 and kinds(data) == ["workload_changed"] * 4
    assert "--allow-workload-change" in text.stdout
    text, data = gate(base, cand, "--allow-workload-change")
    assert text.returncode == 0 and sum("workloads differ" in n for n in data["notes"]) == 4


def test_single_runs_with_differing_workloads_fail(pair) -> None:
    base, cand = pair
    edit_json(base / RUN / "manifest.json", workload_sha256="a" * 64)
    edit_json(cand / "a_total_rps-2_seed-0" / "manifest.json", workload_sha256="b" * 64)
    _, data = gate(base / RUN, cand / "a_total_rps-2_seed-0")
    assert kinds(data) == ["workload_changed"]


def test_hashes_of_different_schema_versions_are_not_compared(pair) -> None:
    base, cand = pair  # an accepted base from before the upgrade, a candidate after it
    edit_json(base / RUN / "manifest.json", schema_version=..., workload_sha256="a" * 64)
    edit_json(cand / RUN / "manifest.json", schema_version=2, workload_sha256="b" * 64)
    text, data = gate(base, cand)
    assert text.returncode == 0 and any("workloads not checked for 4 of 4" in n for n in data["notes"])
    edit_json(base / RUN / "manifest.json", schema_version=2)
    assert kinds(gate(base, cand)[1]) == ["workload_changed"]


def test_same_workload_passes_and_unknown_workload_is_noted(pair) -> None:
    base, cand = pair
    for side in (base, cand):
        edit_json(side / RUN / "manifest.json", workload_sha256="c" * 64)
    text, data = gate(base, cand)
    assert text.returncode == 0
    assert any("workloads not checked for 3 of 4" in n for n in data["notes"])  # the three runs without a hash


# --- bounds

@pytest.mark.parametrize("text", ["p99_ttft_s:+nan%", "p99_ttft_s:+inf%", "p99_ttft_s:+-5%", "p99_ttft_s:-100%",
                                  "p99_ttft_s:-250%", "p99_ttft_s:+1e9%", "p99_ttft_s:+99999999999999999999%",
                                  "p99_ttft_s:+10001%", "p99_ttft_s:10%", "p99_ttft_s", ":+10%", "", "p99_ttft_s:+10%%",
                                  "p99_ttft_s:+ 10%", "P99_TTFT_S:+10%", "no_such_metric_s:+10%", "p99_ttft_s:+.%"])
def test_malformed_bounds_are_bad_input(pair, text) -> None:
    base, cand = pair
    bad_input(cli("compare", str(base), str(cand), "--fail-if", text), "--fail-if")


def test_unknown_model_is_bad_input(pair) -> None:
    base, cand = pair
    bad_input(cli("compare", str(base), str(cand), "--model", "llama-9"), "--model", "llama-2-7b")
    assert cli("compare", str(base), str(cand), "--model", "llama-2-7b").returncode == 0


def test_a_bound_is_checked_even_when_the_base_recorded_no_metrics(tmp_path) -> None:
    run = tmp_path / "base" / "r"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "system": "a"}))
    (run / "summary.json").write_text(json.dumps({"models": {}}))
    bad_input(cli("compare", str(run), str(run), "--fail-if", "p99_tft_s:+10%"), "unknown metric")


# --- broken files: exit 2 naming the file, in compare and in report

MANIFEST_BREAKS = {
    "not json": b"{not json",
    "empty": b"",
    "not utf-8": b"\xff\xfe{\"status\": \"complete\"}",
    "a list": b"[1, 2, 3]",
    "a string": b"\"complete\"",
    "status a number": json.dumps({"status": 5}).encode(),
    "point a string": json.dumps({"status": "complete", "point": "a"}).encode(),
    "point a list": json.dumps({"status": "complete", "point": [1, 2]}).encode(),
    "mostly_failed a string": json.dumps({"status": "complete", "mostly_failed": "no"}).encode(),
    "schema_version a string": json.dumps({"status": "complete", "schema_version": "2"}).encode(),
    "counts not numbers": json.dumps({"status": "complete", "requests_summary": {"total": "x", "ok": 1}}).encode(),
    "workload hash a number": json.dumps({"status": "complete", "workload_sha256": 5}).encode(),
    "warnings a string": json.dumps({"status": "complete", "warnings": "oops"}).encode(),
    "deep": b"[" * 100000,
}


@pytest.mark.parametrize("name", sorted(MANIFEST_BREAKS))
@pytest.mark.parametrize("side", ["base", "cand"])
def test_broken_manifest_is_bad_input(pair, name, side) -> None:
    base, cand = pair
    target = (base if side == "base" else cand) / RUN / "manifest.json"
    target.write_bytes(MANIFEST_BREAKS[name])
    bad_input(cli("compare", str(base), str(cand), "--fail-if", BOUND), str(target))
    bad_input(cli("report", str(target.parent.parent)), str(target))


SUMMARY_BREAKS = {
    "not json": b"{\"models\": ",
    "a list": b"[]",
    "no models": b"{}",
    "models a list": json.dumps({"models": []}).encode(),
    "model a number": json.dumps({"models": {"all": 3}}).encode(),
    "metric a string": json.dumps({"models": {"all": {"p99_ttft_s": "fast"}}}).encode(),
    "metric a bool": json.dumps({"models": {"all": {"p99_ttft_s": True}}}).encode(),
}


@pytest.mark.parametrize("name", sorted(SUMMARY_BREAKS))
def test_broken_summary_is_bad_input(pair, name) -> None:
    base, cand = pair
    target = cand / RUN / "summary.json"
    target.write_bytes(SUMMARY_BREAKS[name])
    bad_input(cli("compare", str(base), str(cand), "--fail-if", BOUND), str(target))
    bad_input(cli("report", str(cand)), str(target))


@pytest.mark.parametrize("table", ["requests", "events", "memory"])
@pytest.mark.parametrize("content", [b"not parquet at all", b"PAR1" + b"\0" * 64 + b"PAR1", b""])
def test_table_that_is_not_parquet_is_bad_input(pair, table, content) -> None:
    base, cand = pair
    target = cand / RUN / f"{table}.parquet"
    target.write_bytes(content)
    bad_input(cli("report", str(cand)), str(target))
    if table == "requests":  # compare reads tables only when summary.json is missing
        (cand / RUN / "summary.json").unlink()
        bad_input(cli("compare", str(base), str(cand), "--fail-if", BOUND), str(target))


@pytest.mark.parametrize("table, column", [("requests", "first_token_s"), ("requests", "input_tokens"),
                                           ("events", "time_s"), ("memory", "bytes")])
def test_table_with_wrong_columns_is_bad_input(pair, table, column) -> None:
    import pandas as pd

    base, cand = pair
    target = cand / RUN / f"{table}.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(target)
    bad_input(cli("report", str(cand)), str(target), "lacks column")
    frame = pd.read_parquet(base / RUN / f"{table}.parquet")
    frame[column] = "soon"
    frame.to_parquet(target)
    bad_input(cli("report", str(cand)), str(target), column)


def test_broken_jsonl_of_an_interrupted_run_is_bad_input(pair) -> None:
    base, cand = pair
    run = cand / RUN
    (run / "requests.parquet").unlink()
    (run / "summary.json").unlink()
    (run / "requests.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    bad_input(cli("compare", str(base), str(cand), "--fail-if", BOUND), str(run / "requests.jsonl"))
    bad_input(cli("report", str(cand)), str(run / "requests.jsonl"))


@pytest.mark.parametrize("content", [b"{oops", b"[]", json.dumps({"runs": "a"}).encode(),
                                     json.dumps({"runs": [1, 2]}).encode(), json.dumps({"config": []}).encode(),
                                     json.dumps({"config": {"baseline": 3}}).encode()])
def test_broken_experiment_json_is_bad_input(pair, content) -> None:
    base, cand = pair
    (cand / "experiment.json").write_bytes(content)
    bad_input(cli("compare", str(base), str(cand), "--fail-if", BOUND), "experiment.json")
    bad_input(cli("report", str(cand)), "experiment.json")


def test_unreadable_files_are_bad_input(pair) -> None:
    base, cand = pair
    target = cand / RUN / "summary.json"
    target.unlink()
    target.mkdir()  # readable by nobody as a file, even by root
    bad_input(cli("compare", str(base), str(cand), "--fail-if", BOUND), str(target))
    bad_input(cli("report", str(cand)), str(target))
    target.rmdir()
    os.mkfifo(target)  # a read would block forever
    bad_input(cli("compare", str(base), str(cand), "--fail-if", BOUND), str(target))
    target.unlink()
    table = cand / RUN / "requests.parquet"
    table.unlink()
    os.mkfifo(table)
    bad_input(cli("report", str(cand)), str(table))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_files_without_read_permission_are_bad_input(pair) -> None:
    base, cand = pair
    target = cand / RUN / "manifest.json"
    target.chmod(0)
    try:
        bad_input(cli("compare", str(base), str(cand), "--fail-if", BOUND), str(target))
    finally:
        target.chmod(0o644)


def test_missing_empty_or_file_paths_are_bad_input(tmp_path, pair) -> None:
    base, _ = pair
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("hello")
    for path, says in [(tmp_path / "nope", "does not exist"), (tmp_path / "empty", "holds no runs"),
                       (tmp_path / "file.txt", "holds no runs")]:
        bad_input(cli("compare", str(base), str(path), "--fail-if", BOUND), says)
        bad_input(cli("compare", str(path), str(base)), says)
        bad_input(cli("report", str(path)), says)


def test_ambiguous_runs_on_one_side_are_bad_input(tmp_path, pair) -> None:
    base, cand = pair
    shutil.copytree(cand / RUN, cand / "copy_of_a_run")
    assert cli("compare", str(base), str(cand), "--fail-if", BOUND, *PER_SEED).returncode == 0  # not in the grid: ignored
    (cand / "experiment.json").unlink()  # a plain folder of runs: two of them claim one point
    bad_input(cli("compare", str(base), str(tmp_path / "cand"), "--fail-if", BOUND), "same system and sweep point")


# --- the report says what is missing

def test_report_lists_missing_failed_and_incomplete_runs(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", systems=("a", "b"), seeds=(0, 1))
    gone, failed, partial = "b_total_rps-2_seed-1", "a_total_rps-5_seed-1", "b_total_rps-5_seed-0"
    shutil.rmtree(root / gone)
    edit_json(root / failed / "manifest.json", status="failed", error="SimError: boom")
    edit_json(root / partial / "manifest.json", status="incomplete")
    report = build(root)
    for doc in (report.md_path.read_text(), report.html_path.read_text()):
        assert gone in doc and "missing" in doc and failed in doc and "boom" in doc and partial in doc
    proc = cli("report", str(root))
    assert proc.returncode == 0, proc.stderr
    for run_id in (gone, failed, partial):
        assert run_id in proc.stdout
    # seeds are counted per system: the point with b's missing seed says so
    md = report.md_path.read_text()
    assert "mean over seeds: a 2, b 1" in md and "mean over seeds: a 1, b 2" in md and "mean of 2 seeds" not in md
    runs = [r for r in load_runs(root) if r.state != "failed"]
    titles = {str(t.title).split(" (")[0]: str(t.title) for t in rich_tables(runs, "a")}
    assert "mean over seeds: a 2, b 1" in titles["total_rps=2.0"]
    assert "mean over seeds: a 1, b 2" in titles["total_rps=5.0"]


def test_report_into_an_unwritable_place_is_bad_input(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", systems=("a",), rates=(2.0,))
    (root / "figures").write_text("a file where the figures folder goes")
    bad_input(cli("report", str(root)), "figures")
    (root / "figures").unlink()
    (root / "report.html").mkdir()
    bad_input(cli("report", str(root)), "report.html")
