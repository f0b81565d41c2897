"""Issue 6's acceptance on the real simulator: same seed -> every ratio 1.0 (exit 0);
doubled engine-init time -> exit 1 under `--fail-if p99_ttft_s:+10%`. One seed: the seed-by-seed
gate (`--mode per-seed`); the default interval gate needs two or more (tests/results/test_gate_stats.py)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from harness.cli import main
from tests.conftest import ROOT

EXPERIMENT = """
name = "nightly"
cluster = "paper-16gpu"
models = ["llama-2-7b", "llama-2-13b"]
systems = ["dedicated", "vllm-ondemand"]
seeds = [3]
options = {{engine_init_s = {init}}}
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = [2.0, 4.0]
duration_s = 90.0
history_days = 1
"""


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(args))
    return code, out.getvalue()


def test_same_seed_compares_equal_and_slower_engine_init_fails_the_bound(tmp_path) -> None:
    for name, init in (("base", 2.0), ("again", 2.0), ("slow", 4.0)):
        (tmp_path / f"{name}.toml").write_text(EXPERIMENT.format(init=init))
        code, _ = cli("run", str(tmp_path / f"{name}.toml"), "--results", str(tmp_path / name), "--no-report")
        assert code == 0
    base, again, slow = (str(tmp_path / n / "nightly") for n in ("base", "again", "slow"))

    code, out = cli("compare", base, again, "--fail-if", "p99_ttft_s:+10%", "--json", "--mode", "per-seed")
    data = json.loads(out)
    assert code == 0 and data["failed"] == []
    assert len({(m["system"], json.dumps(m["point"])) for m in data["metrics"]}) == 4
    ratios = [m["ratio"] for m in data["metrics"] if m["ratio"] is not None]
    assert ratios and all(r == 1.0 for r in ratios)

    code, out = cli("compare", base, slow, "--fail-if", "p99_ttft_s:+10%", "--json", "--mode", "per-seed")
    data = json.loads(out)
    assert code == 1
    assert {f["system"] for f in data["failed"]} >= {"vllm-ondemand"}
    assert all(f["metric"] == "p99_ttft_s" and f["ratio"] > 1.1 for f in data["failed"])


@pytest.mark.slow
def test_default_experiment_quick_end_to_end(tmp_path) -> None:
    """`python run.py --quick`: every registered system, the terminal table, and report.html."""
    proc = subprocess.run([sys.executable, "run.py", "--quick", "--results", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TTFT p99" in proc.stdout and "report.html" in proc.stdout
    html = (tmp_path / "default-quick" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
