"""Fitting the perf model to a run: a run made with known multipliers gives them back.

The "live" run here is a simulated one with prefill and decode 2.5x and 0.6x the defaults, a
known answer for the fitter; the fit against real servers is in tests/live (the stand-in and
real vLLM).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.contracts.errors import WarmbenchError
from harness.live.run import served_model_dirs
from systems.sim import simulate
from systems.sim.calibrate_live import cluster_toml, fit_cluster, fit_live_run, live_specs
from systems.sim.specs import MODELS, resolve_cluster
from workloads.workload import Workload, canonical_frame


def _run_with(prefill_scale: float, decode_scale: float, n: int = 300):
    rng = np.random.default_rng(0)
    arrival = np.sort(rng.uniform(0.0, 120.0, n))
    models = np.where(rng.random(n) < 0.5, "llama-2-7b", "llama-2-13b")
    w = Workload(canonical_frame(arrival, models, rng.integers(50, 1000, n), rng.integers(5, 200, n)), {"source": "t"})
    specs = {m: MODELS[m] for m in ("llama-2-7b", "llama-2-13b")}
    truth = simulate(w, fit_cluster("A100-80GB", specs, prefill_scale, decode_scale), "dedicated",
                     options={"max_model_len": 0})
    q = truth.requests.copy()
    q["received_tokens"] = q["output_tokens"]
    return q


def test_a_run_with_known_multipliers_gives_them_back(tmp_path: Path) -> None:
    fit = fit_live_run(_run_with(2.5, 0.6), "A100-80GB", source="known answer")
    assert fit.converged and fit.requests == 300
    assert fit.prefill_scale == pytest.approx(2.5, rel=0.02)
    assert fit.decode_scale == pytest.approx(0.6, rel=0.02)
    for m in fit.models.values():
        assert m["ttft_error_before"] > 0.3 and m["ttft_error_after"] < 0.02
        assert m["tpot_error_before"] > 0.3 and m["tpot_error_after"] < 0.02
    # the written cluster carries the fit, and simulating on it reproduces the run's medians
    path = tmp_path / "cal.toml"
    path.write_text(cluster_toml(fit, nodes=2, gpus_per_node=4))
    cluster = resolve_cluster(path)
    assert cluster.num_gpus == 8
    assert dict((name, v) for _, name, v in cluster.coefficients)["prefill_scale"] == pytest.approx(fit.prefill_scale, rel=1e-5)


def test_too_few_requests_and_unknown_shapes_are_clear_errors(tmp_path: Path) -> None:
    q = _run_with(1.0, 1.0, n=40)
    q.loc[q.index[5:], "status"] = "error"
    with pytest.raises(WarmbenchError, match="at least 10 successful streamed requests.*has 5"):
        fit_live_run(q, "A100-80GB")
    with pytest.raises(WarmbenchError, match="unknown GPU"):
        fit_live_run(_run_with(1.0, 1.0, n=40), "V100")
    with pytest.raises(WarmbenchError, match="--model my-model=PRESET_OR_DIR"):
        live_specs(["my-model"], {})


def test_model_shapes_come_from_what_the_server_served(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 1000}))
    manifest = {"options": {"system": {"models": {"llama-2-7b": str(tmp_path)}}}}
    served_dirs = served_model_dirs(manifest)  # the harness reads the live manifest
    assert served_dirs == {"llama-2-7b": str(tmp_path)} and served_model_dirs({"options": {"system": {}}}) == {}
    served = live_specs(["llama-2-7b"], served_dirs)["llama-2-7b"]
    assert served.layers == 2 and served.name == "llama-2-7b"    # the directory vLLM served wins over the preset
    given = live_specs(["llama-2-7b"], {**served_dirs, "llama-2-7b": "llama-2-13b"})["llama-2-7b"]
    assert given.layers == 40 and given.tp == 2                     # --model wins over both
    assert live_specs(["llama-2-7b#1"], {})["llama-2-7b#1"].layers == 32  # the preset of the name


def test_engine_starts_are_measured_from_the_runs_events() -> None:
    import pandas as pd

    from systems.sim.calibrate_live import engine_starts

    events = pd.DataFrame({
        "time_s": [0.0, 10.0, 50.0, 52.0, 60.0, 74.0, 1.0, 3.0],
        "kind": ["instance_start", "instance_ready", "instance_start", "instance_failed", "instance_start",
                 "instance_ready", "instance_start", "instance_ready"],
        "model": ["llama-2-7b"] * 6 + ["not-in-the-fit"] * 2, "node": "n", "gpus": "", "detail": ""})
    starts = engine_starts(events, {"llama-2-7b": MODELS["llama-2-7b"]}, "A100-80GB")
    assert list(starts) == ["llama-2-7b"]                       # other models' events are not this fit's
    st = starts["llama-2-7b"]
    assert st["starts"] == 2 and st["start_p50_s"] == pytest.approx(12.0)  # 10 s and 14 s; the failed one is out
    assert st["engine_init_s"] == pytest.approx(12.0 - 13_476_831_232 / 32e9)  # less a host-memory load at 32 GB/s
    assert engine_starts(events.iloc[0:0], {"llama-2-7b": MODELS["llama-2-7b"]}, "A100-80GB") == {}
