"""`history`: metrics per code revision, change points, the self-contained page, exit codes.

The results are real: the simulator runs a tiny experiment through `run` at four revisions of a
throw-away git repository (real commits, then an uncommitted file: a dirty revision), so the code
identity, the archive into `.history/` and the manifests are the real ones. The third revision
plants a step: vllm-ondemand's engines take 30 s more to start, which really raises its cold TTFT.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness import identity
from harness.cli import main
from harness.report.changepoints import Cell, Series, detect

TINY = """\
name = "tiny"
backend = "sim"
cluster = "paper-16gpu"
models = ["llama-2-7b", "llama-2-13b"]
systems = [{systems}, "dedicated"]
seeds = [0, 1]
[options]
cuda_graphs = false
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = 2.0
duration_s = 60.0
"""
PLAIN, SLOW = '"vllm-ondemand"', '{name = "vllm-ondemand", options = {engine_init_s = 30.0}}'


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """results/ after four revisions (A, B unchanged, C the planted step, D = C + an uncommitted file),
    and a copy taken after B (one night's artefact)."""
    root = tmp_path_factory.mktemp("history")
    repo, results, toml = root / "code", root / "results", root / "tiny.toml"
    (repo / "harness").mkdir(parents=True)
    git(repo, "init", "-q")
    revs: list[str] = []

    def revision(text: str, commit: bool = True) -> None:
        (repo / "harness" / ("x.py" if commit else "untracked.py")).write_text(text)
        if commit:
            git(repo, "add", "harness/x.py")
            git(repo, "commit", "-q", "-m", text)
        revs.append(identity.code_key(identity.code_identity(repo)))

    def run(systems: str) -> None:
        toml.write_text(TINY.format(systems=systems))
        time.sleep(1.0)  # started_at has one-second resolution: each revision starts in a later second
        code, out, err = cli("run", str(toml), "--results", str(results), "--no-report", "--jobs", "1")
        assert code == 0, out + err

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(identity, "ROOT", repo)  # the code identity of runs is this repository's
        revision("A = 1\n")
        run(PLAIN)
        revision("A = 2\n")
        run(PLAIN)
        shutil.copytree(results, root / "night1")
        revision("A = 3\n")
        run(SLOW)
        revision("B = 1\n", commit=False)
        run(SLOW)
    return {"root": root, "results": results, "revs": revs, "exp": results / "tiny"}


def test_four_revisions_in_date_order_with_the_dirty_one_marked(built) -> None:
    code, out, err = cli("history", str(built["results"]), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [r["key"] for r in data["revisions"]] == built["revs"]
    assert len(set(built["revs"])) == 4 and "+" in built["revs"][3]  # D: commit + hash of the uncommitted file
    dirty = data["revisions"][3]
    assert dirty["dirty"] is True and dirty["diff_sha256"] and "(dirty)" in dirty["label"]
    assert all(r["runs"] == 4 for r in data["revisions"])  # 2 systems x 2 seeds each; A..C came from .history
    assert any(".history" in f for f in data["revisions"][0]["folders"])
    p99 = next(s for s in data["series"] if s["system"] == "vllm-ondemand" and s["metric"] == "p99_ttft_s")
    assert [v["seeds"] for v in p99["values"]] == [2, 2, 2, 2]
    assert all(v["ci95"][0] <= v["mean"] <= v["ci95"][1] for v in p99["values"])


def test_the_planted_step_is_found_at_its_revision_and_nowhere_else(built) -> None:
    code, out, err = cli("history", str(built["results"]), "--json", "--metric", "p99_ttft_s", "--metric", "p50_ttft_s")
    assert code == 0, err
    data = json.loads(out)
    step = built["revs"][2]
    found = data["change_points"]
    assert {(c["system"], c["metric"], c["revision"]) for c in found} >= {("vllm-ondemand", "p99_ttft_s", step)}
    assert all(c["revision"] == step and c["system"] == "vllm-ondemand" for c in found)  # B, D and dedicated: none
    p99 = next(c for c in found if c["metric"] == "p99_ttft_s")
    assert p99["worse"] and p99["ratio"] > 1.05 and p99["ci"][0] > 1 and p99["test"] == "ratio"
    assert p99["previous"] == built["revs"][1] and "paired over 2 seeds" in p99["evidence"]
    assert p99["size"].startswith("+")


def test_terminal_tables_and_the_page_open_from_the_results_folder_alone(built, tmp_path) -> None:
    code, out, err = cli("history", str(built["results"]), "--system", "vllm-ondemand")
    assert code == 0, err
    assert "p99_ttft_s" in out and "change point(s)" in out and "▲" in out
    page = built["results"] / "history.html"
    assert page.is_file() and (built["results"] / "history.json").is_file()
    text = page.read_text()
    assert "data:image/png;base64," in text and "(dirty)" in text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text, re.IGNORECASE)  # nothing fetched
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "dedicated" not in text.split("<h2>Revisions</h2>")[0]  # --system kept only vllm-ondemand
    moved = tmp_path / "elsewhere.html"
    code, _, err = cli("history", str(built["results"]), "--html", str(moved), "--json", str(tmp_path / "h.json"))
    assert code == 0 and moved.is_file() and json.loads((tmp_path / "h.json").read_text())["revisions"]


def test_several_results_folders_are_one_history_without_double_counting(built) -> None:
    code, out, err = cli("history", str(built["root"] / "night1"), str(built["results"]), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [r["key"] for r in data["revisions"]] == built["revs"]
    assert [r["runs"] for r in data["revisions"]] == [4, 4, 4, 4]  # night1's copies of A and B count once
    recent = json.loads(cli("history", str(built["results"]), "--json", "--last", "2")[1])
    assert [r["key"] for r in recent["revisions"]] == built["revs"][2:] and recent["change_points"] == []
    assert all(v["revision"] in built["revs"][2:] for s in recent["series"] for v in s["values"])
    alone = json.loads(cli("history", str(built["root"] / "night1"), "--json")[1])
    assert [r["key"] for r in alone["revisions"]] == built["revs"][:2] and alone["change_points"] == []


def _strip_code(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    for key in ("code", "schema_version"):
        manifest.pop(key, None)
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_results_without_the_code_revision(built, tmp_path) -> None:
    old = tmp_path / "old"
    shutil.copytree(built["exp"], old / "tiny", ignore=shutil.ignore_patterns(".history"))
    for run in (old / "tiny").glob("*_seed-*"):
        _strip_code(run)
    code, out, err = cli("history", str(old))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "schema_version 2" in err and "rerun" in err
    mixed = tmp_path / "mixed"
    shutil.copytree(built["exp"], mixed / "tiny")
    _strip_code(mixed / "tiny" / "dedicated_seed-0")
    code, out, err = cli("history", str(mixed), "--json")
    assert code == 0, err
    assert any("skipped 1 run(s)" in n and "schema_version 2" in n for n in json.loads(out)["notes"])


def test_bad_input_is_one_line_and_exit_2(built, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(built["exp"], broken / "tiny")
    bad = next((broken / "tiny" / ".history").glob("*/dedicated_seed-0")) / "manifest.json"
    bad.write_text("{not json")
    cases = [((str(tmp_path / "missing"),), "does not exist"),
             ((str(broken),), f"{bad}"),
             ((str(built["results"]), "--metric", "p99_tft_s"), "--metric 'p99_tft_s'"),
             ((str(built["results"]), "--system", "nope"), "--system 'nope'"),
             ((str(built["results"]), "--min-effect-pct", "0"), "must be > 0"),
             ((str(tmp_path / "empty"),), "holds no runs")]
    (tmp_path / "empty").mkdir()
    for args, message in cases:
        code, out, err = cli("history", *args)
        assert code == 2, (args, out, err)
        assert message in " ".join(err.split()) and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


def _series(values: list[list[float]]) -> Series:
    """A series whose revision i has the per-seed values values[i]."""
    cells = {f"r{i}": Cell(float(sum(v) / len(v)), None, {str(s): x for s, x in enumerate(v)})
             for i, v in enumerate(values)}
    return Series("e", "s", "", "p99_ttft_s", cells)


def test_detection_with_one_seed_needs_two_revisions_a_side() -> None:
    step = _series([[1.0], [1.0], [1.01], [2.0], [2.02], [1.99]])
    detect(step, 0.05)
    assert [c.revision for c in step.change_points] == ["r3"] and step.change_points[0].test == "segments"
    small = _series([[1.0], [1.01], [1.0], [1.03], [1.04], [1.03]])  # a 3% step: under the minimum effect
    detect(small, 0.05)
    assert small.change_points == [] and small.unconfirmed == []
    short = _series([[1.0], [2.0]])  # one seed, one revision a side: cannot be tested, said so
    detect(short, 0.05)
    assert short.change_points == [] and len(short.unconfirmed) == 1 and "run two or more seeds" in short.unconfirmed[0]


def test_detection_finds_a_regression_and_its_fix_and_not_seed_noise() -> None:
    both = _series([[1.0, 2.0]] * 3 + [[1.5, 3.1]] * 3 + [[1.0, 2.0]] * 3)
    detect(both, 0.05)
    assert [(c.revision, c.worse) for c in both.change_points] == [("r3", True), ("r6", False)]
    assert math.isclose(both.change_points[0].ratio, 4.6 / 3.0)
    noise = _series([[1.0, 1.0], [1.0, 1.0], [3.0, 0.9], [3.0, 0.9]])  # +95% in the mean, but the seeds disagree
    detect(noise, 0.05)
    assert noise.change_points == [] and noise.unconfirmed == []


def test_mean_ci_is_the_t_interval_the_paired_ratio_uses() -> None:
    from harness.metrics import mean_ci, paired_ratio_ci

    assert mean_ci([1.0, 3.0]) == pytest.approx((2.0 - 12.706, 2.0 + 12.706))  # t(1 dof) x sd sqrt(2) / sqrt(2)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert mean_ci([1.0]) is None and mean_ci([1.0, math.nan]) is None
    low, high = mean_ci([math.log(2.0), math.log(4.0)])
    assert paired_ratio_ci([2.0, 8.0], [1.0, 2.0]) == pytest.approx((math.exp(low), math.exp(high)))
