"""`reproduce`: every claim gets a row whatever its verdict, the verdict rules on known numbers, an
unknown claim is bad input, a moved assumption moves the number (tiny real simulation), and
REPRODUCTION.md holds every row."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from harness import experiment, runner
from harness.reproduce import claims as C
from harness.reproduce import document
from harness.reproduce import sensitivity as S
from harness.reproduce import verdicts as V
from tests.results.test_experiment import cli


@pytest.mark.parametrize("paper, ours, verdict", [
    (50.79, 40.0, V.REPRODUCED),       # within 2x
    (50.79, 25.4, V.REPRODUCED),       # exactly half: the rule's edge is inclusive
    (50.79, 3.1, V.SAME),              # WarmServe better, by far less
    (50.79, 0.8, V.NOT_REPRODUCED),    # WarmServe worse
    (2.5, 5.1, V.SAME),                # above 2x the paper's is not "reproduced" either
    (2.5, None, V.NO_DATA),
])
def test_ratio_verdict(paper: float, ours: float | None, verdict: str) -> None:
    assert V.ratio_verdict(paper, ours) == verdict


@pytest.mark.parametrize("paper, ours, full, verdict", [
    (15.0, 20.0, 95.0, V.REPRODUCED),       # within 10 pp
    (15.0, 60.0, 90.0, V.SAME),             # below full, as in the paper
    (15.0, 72.3, 72.7, V.NOT_REPRODUCED),   # 0.4 pp below full: within noise, not a direction
    (88.0, 50.0, 40.0, V.NOT_REPRODUCED),   # above full, the paper has it below
])
def test_share_verdict(paper: float, ours: float, full: float, verdict: str) -> None:
    assert V.share_verdict(paper, ours, 100.0, full) == verdict


def test_every_claim_has_a_row_without_any_runs(tmp_path: Path) -> None:
    rows = [row for claim in C.CLAIMS.values() for row in claim.measure({})]
    names = {r.claim for r in rows}
    assert {"headline-ttft", "capacity-muxserve", "window", "512gpu"} <= names
    assert {f"ablation: {label}" for label, _, _ in C.ABLATION} <= names
    assert all(r.verdict for r in rows)
    md, html = document.write(tmp_path, rows, {}, [], ["note"])
    text = md.read_text()
    for r in rows:
        assert f"| {r.claim} |" in text
    assert "## Assumptions" in text and "NVLink 4.0" in text and html.is_file()


def test_unknown_claim_is_bad_input(tmp_path: Path) -> None:
    code, _, err = cli("reproduce", "--claims", "headline-ttft,nope", "--results", str(tmp_path))
    assert code == 2 and "nope" in err and "headline-ttft" in err
    assert not (tmp_path / "reproduce" / "REPRODUCTION.md").exists()


def test_every_claim_experiment_validates() -> None:
    from harness.commands.reproduce import _prepare

    for claim in C.CLAIMS.values():
        for raw in claim.experiments():
            for quick in (False, True):
                cfg, specs = _prepare(copy.deepcopy(raw), quick)
                assert specs and cfg.name.startswith("repro-")


def _tiny(raw: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["models"] = ["llama-2-7b"]
    raw["workload"] = {"spec": "synthetic-week", "params": {"total_rps": 4.0, "alpha": 0.5, "duration_s": 60.0,
                                                            "history_days": 1}}
    raw["seeds"] = [0]
    raw["quick"] = {}
    return raw


def test_a_moved_assumption_moves_the_number(tmp_path: Path) -> None:
    """Process start 5 s lengthens SLLM-GPU's cold starts, not WarmServe's prewarmed ones: the ratio moves."""
    study = S.STUDIES["headline"]
    base_raw = _tiny(study.base())
    raw = copy.deepcopy(base_raw)
    raw["name"] = "sens-tiny-process"
    S.PROCESS.apply(raw, (5.0,), tmp_path)
    runs = {}
    for r in (base_raw, raw):
        exp_dir, outcomes = runner.run(experiment.parse(r, C.SOURCE), tmp_path)
        assert all(o.status == "complete" for o in outcomes)
        runs[r["name"]] = V.complete_runs(exp_dir)
    base, found = S.effects(study, runs[base_raw["name"]], [(S.PROCESS, runs["sens-tiny-process"])], quick=False)
    moved = found[0].points[-1][1]
    assert base is not None and moved is not None and moved > base * 1.2
    rows = document.sensitivity_table(study, base, found)
    assert rows[-1][0] == S.PROCESS.label and float(rows[-1][4]) > 0
    gap = S.closing(study, base, found)  # the only assumption tried is named, as closer or as largest move
    assert S.PROCESS.label in gap or gap == "reproduced at the base point"


def test_reproduce_cli_writes_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command end to end on a tiny 512gpu claim: exit 0, the table, REPRODUCTION.md with its row."""
    tiny = C.Claim("512gpu", "tiny", lambda: [{**_tiny(C.gpu512_experiments()[0]), "cluster": "paper-16gpu"}],
                   C.measure_512)
    monkeypatch.setitem(C.CLAIMS, "512gpu", tiny)
    code, out, _ = cli("reproduce", "--claims", "512gpu", "--results", str(tmp_path), "--jobs", "1")
    assert code == 0, out
    text = (tmp_path / "reproduce" / "REPRODUCTION.md").read_text()
    assert "| 512gpu |" in text and "not checkable" in text
    assert (tmp_path / "reproduce" / "reproduction.html").is_file()


def test_a_failed_run_exits_1_and_ctrl_c_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verdicts never fail the command; a failed run does (1), Ctrl-C stops it (130), the table still written on 1."""
    def failing(cfg, root, jobs=1, on_done=lambda o: None, **kw):
        on_done(runner.RunOutcome(experiment.grid(cfg)[0], "failed", error="boom"))
        (root / cfg.name).mkdir(parents=True, exist_ok=True)
        return root / cfg.name, []

    monkeypatch.setattr(runner, "run", failing)
    code, out, _ = cli("reproduce", "--claims", "512gpu", "--results", str(tmp_path))
    assert code == 1 and "boom" in out
    assert "| 512gpu |" in (tmp_path / "reproduce" / "REPRODUCTION.md").read_text()

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", interrupted)
    assert cli("reproduce", "--claims", "512gpu", "--results", str(tmp_path))[0] == 130


def test_closing_names_closers_and_crossers() -> None:
    """Computed from the points: within the band closes it; past the paper's value but outside the band crosses it."""
    study = S.STUDIES["headline"]
    found = [S.Effect(S.PROCESS, [(2.0, 37.0), (5.0, 150.0)]), S.Effect(S.SSD, [(2.0, 9.0), (12.0, 9.5)])]
    text = S.closing(study, 9.4, found)
    assert text.startswith("closed by: " + S.PROCESS.label + " = 2 gives 37.00x")
    assert "crossed beyond the band by: " + S.PROCESS.label + " = 5.0 gives 150.00x" in text
    assert S.SSD.label not in text
    far = S.closing(study, 9.4, [S.Effect(S.SSD, [(2.0, 9.0)])])
    assert far.startswith("no single assumption") and "9.00x" in far
    assert S.closing(study, 40.0, found) == "reproduced at the base point"
