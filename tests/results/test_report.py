"""Reports from hand-made runs: key tables, figures (valid PNGs), self-contained HTML and Markdown."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from harness.metrics import paired_ratio_ci
from harness.report.document import build
from harness.report.figures import MAX_MEMORY_GPUS, memory_by_gpu, memory_stack
from harness.report.load import load_runs, summary_frame
from harness.report.table import key_cells, markdown_table, ratio
from harness.store import write_run
from tests.conftest import ROOT
from tests.results.factory import requests, synthetic_result, write_experiment

PNG = b"\x89PNG\r\n\x1a\n"


def test_key_cells_mark_the_best_and_give_ratios(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", systems=("a", "b"), slow={"b": 3.0})
    runs = load_runs(root)
    assert [r.label for r in runs] == ["total_rps=2.0", "total_rps=2.0", "total_rps=5.0", "total_rps=5.0"]
    cells = key_cells(runs, "total_rps=2.0", baseline="a")
    a, b = cells["a"], cells["b"]
    assert a["p50_ttft_s"].best and not b["p50_ttft_s"].best  # lower latency wins
    assert a["p50_ttft_s"].ratio is None                       # the baseline has no ratio
    assert b["p50_ttft_s"].ratio == pytest.approx(b["p50_ttft_s"].value / a["p50_ttft_s"].value)
    assert b["p50_ttft_s"].ratio > 3
    assert b["p50_ttft_s"].spread is None and "±" not in b["p50_ttft_s"].ratio_text()  # one seed: no CI
    higher = "ttft_under_100ms"
    assert (a[higher].value > b[higher].value) == a[higher].best  # attainment-like metrics: higher wins
    md = markdown_table(runs, "total_rps=2.0", "a")
    assert md.splitlines()[0].startswith("| system |") and "**" in md and "(×" in md


def test_ratio_edge_cases() -> None:
    assert ratio(0.0, 0.0) == 1.0
    assert ratio(1.0, 0.0) == float("inf")
    assert ratio(float("nan"), 1.0) is None
    assert ratio(3.0, 2.0) == 1.5


def test_memory_snapshots_become_per_gpu_category_timelines() -> None:
    # each (time, gpu) group is a full snapshot: what it leaves out is 0
    mem = pd.DataFrame([
        (0.0, 0, 0, "weights", "m1", 10.0), (0.0, 0, 0, "free", "", 70.0),
        (5.0, 0, 0, "weights", "m1", 10.0), (5.0, 0, 0, "weights", "m3", 5.0),  # two models' weights add up
        (5.0, 0, 0, "prewarmed", "m2", 20.0), (5.0, 0, 0, "free", "", 45.0),
        (9.0, 0, 0, "kv", "m3", 30.0), (9.0, 0, 0, "free", "", 50.0),          # m1, m2 gone
        (1.0, 0, 1, "process", "m1", -1.0), (1.0, 0, 1, "free", "", 80.0),    # NVML: size unknown
    ], columns=["time_s", "node", "gpu", "category", "model", "bytes"])
    per_gpu = memory_by_gpu(mem)
    assert list(per_gpu) == [(0, 0), (0, 1)]
    g0 = per_gpu[(0, 0)]
    assert g0.index.tolist() == [0.0, 5.0, 9.0]
    assert g0["weights"].tolist() == [10.0, 15.0, 0.0]
    assert g0["prewarmed"].tolist() == [0.0, 20.0, 0.0]
    assert g0["kv"].tolist() == [0.0, 0.0, 30.0]
    assert g0["free"].tolist() == [70.0, 45.0, 50.0]
    assert list(g0.columns) == ["weights", "kv", "prewarmed", "process", "free"]  # free stacks on top
    assert per_gpu[(0, 1)]["process"].tolist() == [0.0]
    assert memory_by_gpu(mem.iloc[0:0]) == {}


def test_a_big_cluster_draws_only_its_busiest_gpus() -> None:
    rows = []
    for gpu in range(64):
        for t in range(1 + (gpu == 40) * 5 + (gpu < MAX_MEMORY_GPUS - 1)):  # GPU 40 changes most
            rows += [(float(t), gpu // 8, gpu % 8, "weights", "m", 10.0), (float(t), gpu // 8, gpu % 8, "free", "", 70.0)]
    mem = pd.DataFrame(rows, columns=["time_s", "node", "gpu", "category", "model", "bytes"])
    fig = memory_stack(mem, "run")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(titles) == MAX_MEMORY_GPUS
    assert "node 5 GPU 0" in titles and "node 0 GPU 0" in titles and "node 7 GPU 7" not in titles
    assert f"{MAX_MEMORY_GPUS} of 64 GPUs" in fig._suptitle.get_text()


def test_report_html_is_self_contained_with_figures_tables_and_warnings(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", systems=("a", "b"))
    report = build(root)
    assert set(report.figures) == {"ttft_cdf", "rate_curves", "ttft_timeline", "gpu_memory", "model_p99_ttft"}
    for path in report.figures.values():
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, path
    text = report.html_path.read_text()
    assert text.count("data:image/png;base64,") == len(report.figures)
    assert not re.search(r"""src=['"](?!data:)""", text)  # nothing fetched from elsewhere
    assert "GPU memory not measured" in text                # system a recorded no memory
    assert "requests failed" in text
    assert "<table" in text and "TTFT p99" in text and "&quot;baseline&quot;" in text  # manifest shown
    md = report.md_path.read_text()
    assert "![ttft_cdf](figures/ttft_cdf.png)" in md and "| system |" in md
    assert "## TTFT by start kind (total_rps=5.0)" in md and "| b | cold |" in md


def test_client_lag_and_incomplete_runs_are_flagged(tmp_path) -> None:
    result = synthetic_result("live-x")
    result.requests["sent_s"] = result.requests["scheduled_s"] + 0.3  # the client fell behind
    result.manifest["status"] = "incomplete"
    run = write_run(result, tmp_path / "run")
    report = build(run)
    joined = " ".join(report.warnings)
    assert "client overloaded" in joined and "incomplete" in joined
    assert "rate_curves" not in report.figures  # a single run has no rate axis


def test_non_streaming_run_reports_ttft_unavailable(tmp_path) -> None:
    rows = [dict(scheduled_s=float(i), end_s=float(i) + 1.0) for i in range(5)]  # ok, but no first token
    result = synthetic_result("sllm")
    result.requests = requests(rows)
    report = build(write_run(result, tmp_path / "run"))
    assert any("TTFT unavailable" in w for w in report.warnings)
    frame = summary_frame(load_runs(tmp_path / "run"))
    assert np.isnan(frame.loc[frame.model == "all", "p99_ttft_s"]).all()


def test_report_command(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", systems=("a", "b"))
    proc = subprocess.run([sys.executable, "run.py", "report", str(root), "--baseline", "b"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "report.html" in proc.stdout and "×ratio to b" in proc.stdout
    proc = subprocess.run([sys.executable, "run.py", "report", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "does not exist" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr


def test_failed_runs_are_warned_about_and_left_out(tmp_path) -> None:
    import json

    root = write_experiment(tmp_path / "exp", systems=("a", "b"))
    (root / "c_total_rps-2_seed-0").mkdir()
    (root / "c_total_rps-2_seed-0" / "manifest.json").write_text(json.dumps(
        {"status": "failed", "error": "SimError: boom", "point": {"system": "c", "total_rps": 2.0, "seed": 0}}))
    exp = json.loads((root / "experiment.json").read_text())
    exp["runs"].append("c_total_rps-2_seed-0")  # part of the grid
    (root / "experiment.json").write_text(json.dumps(exp))
    report = build(root)
    assert any("run failed (SimError: boom)" in w for w in report.warnings)
    assert "| c |" not in report.md_path.read_text()


def test_seeds_are_averaged_in_tables_and_pooled_in_figures(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", systems=("a", "b"), seeds=(0, 1))
    runs = load_runs(root)
    assert {r.label for r in runs} == {"total_rps=2.0", "total_rps=5.0"}  # seed is not a table of its own
    cells = key_cells(runs, "total_rps=2.0", baseline="a")
    p99 = [r.summary["all"]["p99_ttft_s"] for r in runs if r.system == "b" and r.label == "total_rps=2.0"]
    assert len(p99) == 2 and cells["b"]["p99_ttft_s"].value == pytest.approx(sum(p99) / 2)
    from harness.report.table import rich_tables
    assert "mean of 2 seeds" in str(rich_tables(runs, "a")[0].title)
    # the ratio's 95% CI pairs the seeds (the same workload draw for both systems)
    a = {r.point["seed"]: r.summary["all"]["p99_ttft_s"] for r in runs if r.system == "a" and r.label == "total_rps=2.0"}
    b = {r.point["seed"]: r.summary["all"]["p99_ttft_s"] for r in runs if r.system == "b" and r.label == "total_rps=2.0"}
    lo, hi = paired_ratio_ci([b[0], b[1]], [a[0], a[1]])
    cell = cells["b"]["p99_ttft_s"]
    assert cell.spread == pytest.approx(math.sqrt(hi / lo) - 1.0)
    assert cell.ratio_text().startswith(f"×{cell.ratio:.3g}±")
    assert cells["a"]["p99_ttft_s"].spread is None  # the baseline has no ratio
    assert f"({cell.ratio_text()})" in markdown_table(runs, "total_rps=2.0", "a")
    report = build(root)
    assert "ttft_cdf" in report.figures


def test_memory_run_choice(tmp_path) -> None:
    from harness.contracts.errors import WarmbenchError

    root = write_experiment(tmp_path / "exp", systems=("a", "b"), rates=(2.0,))
    with pytest.raises(WarmbenchError, match="no such run"):
        build(root, memory_run="zzz")
    with pytest.raises(WarmbenchError, match="recorded no GPU memory"):
        build(root, memory_run="a_total_rps-2_seed-0")
    report = build(root, memory_run="b_total_rps-2_seed-0")
    assert "gpu_memory" in report.figures
