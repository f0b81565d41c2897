"""`run.py sim` writes a complete run directory; the bench's generator and profile report behave."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.bench.sim import generate, scenarios
from harness.cli import main
from harness.store import read_run
from systems.sim.calibrate import PROFILES_DIR, profile_error


def write_workload(path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({
        "request_id": np.arange(n), "arrival_s": np.sort(rng.uniform(0, 60, n)),
        "model": rng.choice(["llama-2-7b", "llama-2-7b#1", "llama-2-13b"], n),
        "input_tokens": rng.integers(10, 500, n), "output_tokens": rng.integers(3, 100, n)})
    frame.to_csv(path, index=False)
    return path


def test_sim_command_writes_a_run(tmp_path: Path, capsys):
    wl = write_workload(tmp_path / "wl.csv")
    out = tmp_path / "run"
    code = main(["sim", "--system", "vllm-ondemand", "--workload", str(wl), "--cluster", "paper-16gpu",
                 "--duration-s", "50", "--seed", "3", "--option", "engine_init_s=3.5", "--out", str(out)])
    assert code == 0
    run = read_run(out)
    assert len(run.requests) == int((pd.read_csv(wl)["arrival_s"] < 50).sum())
    m = run.manifest
    assert m["system"] == "vllm-ondemand" and m["seed"] == 3 and m["options"]["engine_init_s"] == 3.5
    assert len(m["workload_sha256"]) == 64 and m["workload_requests"] == 200
    assert "versions" in m and m["status"] == "complete"
    assert (out / "summary.json").exists() and len(run.events) and len(run.memory)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    (["--system", "nope"], "unknown system"),
    (["--system", "dedicated", "--option", "engine_init_s=slow"], "engine_init_s"),
    (["--system", "dedicated", "--option", "bogus=1"], "unknown option"),
    (["--system", "dedicated", "--cluster", "missing.toml"], "does not exist"),
])
def test_sim_command_user_errors_exit_2(tmp_path: Path, capsys, args, needle):
    wl = write_workload(tmp_path / "wl.csv")
    code = main(["sim", "--workload", str(wl), "--out", str(tmp_path / "run"), *args])
    assert code == 2
    assert needle in capsys.readouterr().err


def test_bench_scenarios_are_seeded_and_shaped_as_specified():
    a, b = scenarios(quick=False)
    wa = generate(a)
    assert len(wa) == pytest.approx(15 * 1200, rel=0.1) and len(wa.models) == 4
    assert wa.requests["input_tokens"].max() <= 1024 and wa.requests["output_tokens"].min() >= 3
    assert len(b.models) == 64 and b.cluster == "sim-512gpu" and b.rate_per_s == 300
    pd.testing.assert_frame_equal(generate(a).requests, wa.requests)


def test_roofline_tracks_vidur_profiles():
    if not PROFILES_DIR.exists():
        pytest.skip(f"Vidur profiles not found at {PROFILES_DIR} (../shared is absent)")
    report = profile_error()
    assert len(report["profiles"]) == 6
    for name, row in report["profiles"].items():
        assert row["all"] < 10, name                        # median error over all token counts
        assert max(row["by_tokens"].values()) < 25, name   # and in every token-count bucket
