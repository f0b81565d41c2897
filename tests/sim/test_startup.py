"""Cold starts from grounded parts (systems/sim/startup.py) and their re-simulation against the
published start rows (systems/sim/fidelity_starts.py)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.contracts.result import event_fields
from systems.sim import simulate
from systems.sim.fidelity.table import PUBLISHED_CSV, NotSimulated, read_table
from systems.sim.fidelity_starts import simulate_start_row, simulate_start_row_detail
from systems.sim.specs import MODELS
from systems.sim.startup import (
    GRAPH_CAPTURE_S_PER_LAYER_SIZE,
    LOADERS,
    PINNED_DMA_EFFICIENCY,
    WAKE_FIXED_S,
    capture_sizes,
)
from tests.sim.util import small_cluster, workload

SEVEN_B = MODELS["llama-2-7b"].weight_bytes
SSD, PCIE = 6e9, 32e9   # the test cluster's node (NodeSpec defaults)


def row(**kw) -> dict:
    """A start row as read from CSV (every value a string)."""
    base = dict(id="t", group="weight-load", source="test", gpu="A100-80GB", model="llama-2-7b", tp="1",
                engine="vllm", engine_mode="loader=safetensors", input_tokens="", output_tokens="", batch="",
                metric="load", value="1", unit="s", note="NVMe 3.91 GB/s")
    base.update({k: str(v) for k, v in kw.items()})
    return base


# ---------------------------------------------------------------- the shipped table's start rows
START_ROWS = [r for r in read_table() if r.group in ("weight-load", "engine-start", "sleep-wake")]


@pytest.mark.parametrize("r", START_ROWS, ids=[r.id for r in START_ROWS])
def test_every_start_row_is_in_band_or_says_why_not(r) -> None:
    try:
        value = simulate_start_row(r)
    except NotSimulated as exc:
        assert r.id in ("sleep-a100-30b-cold", "sleep-a100-235b-cold", "sleep-a100-235b-wake"), exc.reason
        assert re.search(r"FP8|MoE", exc.reason)
        return
    if "OUT OF BAND:" in r.note:   # a held-out miss the row's note explains: it must really be one
        assert abs(value / r.value - 1) > r.band, (r.id, value, r.value, "in band now: update its note")
        return
    assert abs(value / r.value - 1) <= r.band, (r.id, value, r.value)


def test_each_loader_against_its_source() -> None:
    # vllm-pr-10647 (A100 NVMe): safetensors 7.29 s / 16.04 s, fastsafetensors 3.67 s / 6.88 s
    for model, loader, published in (("llama-2-7b", "safetensors", 7.29), ("llama-2-13b", "safetensors", 16.04),
                                     ("llama-2-7b", "fastsafetensors", 3.67), ("llama-2-13b", "fastsafetensors", 6.88)):
        got = simulate_start_row(row(source="vllm-pr-10647", model=model, engine_mode=f"loader={loader}", note=""))
        assert got == pytest.approx(published, rel=0.20), (model, loader)
    # sllm-store-bench (H100, NVMe 29.4 GB/s): safetensors 4.437 s, ServerlessLLM's loader 0.678 s
    h100 = dict(gpu="H100-80GB", model="llama-3.1-8b", note="NVMe 29.4 GB/s")
    assert simulate_start_row(row(**h100)) == pytest.approx(4.437, rel=0.20)
    assert simulate_start_row(row(**h100, engine_mode="loader=serverlessllm")) == pytest.approx(0.678, rel=0.20)


def test_held_out_tp2_rows_of_the_same_source() -> None:
    # vllm-pr-10647 also lists Llama-2-13B at TP 2 (14.35 s / 6.02 s); nothing was fitted to them:
    # every safetensors rank deserialises the whole checkpoint, so TP barely helps it
    tp2 = dict(source="vllm-pr-10647", model="llama-2-13b", tp=2, note="")
    assert simulate_start_row(row(**tp2)) == pytest.approx(14.35, rel=0.20)
    assert simulate_start_row(row(**tp2, engine_mode="loader=fastsafetensors")) == pytest.approx(6.02, rel=0.20)


def test_the_value_comes_from_the_setup_not_the_published_number(tmp_path: Path) -> None:
    seven = simulate_start_row(row(value=7.29))
    assert simulate_start_row(row(value=99.0)) == seven            # the published value is never read
    thirteen = simulate_start_row(row(model="llama-2-13b"))
    # safetensors' time is bytes over a fixed rate on one machine: it scales with the checkpoint
    assert thirteen / seven == pytest.approx(MODELS["llama-2-13b"].weight_bytes / SEVEN_B, rel=1e-6)
    faster_drive = simulate_start_row(row(note="NVMe 12 GB/s"))
    assert faster_drive < seven                                      # the drive's speed is an input
    ms = simulate_start_row(row(unit="ms"))
    assert ms == pytest.approx(seven * 1000)
    # a planted wrong published value is flagged by the bench
    from harness.bench import fidelity

    with open(PUBLISHED_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if r["id"] == "load-a100-7b-safetensors":
            r["value"] = "14.58"     # twice the published 7.29 s
    planted = tmp_path / "planted.csv"
    with open(planted, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = fidelity.run(planted)
    assert "load-a100-7b-safetensors" in result["out_of_band"]
    assert "load-a100-7b-fastsafetensors" not in result["out_of_band"]


def test_rows_the_simulator_cannot_express_say_why() -> None:
    with pytest.raises(NotSimulated, match="FP8"):
        simulate_start_row(row(model="qwen3-235b-a22b-fp8", group="sleep-wake", metric="wake",
                               engine_mode="sleep_level_1"))
    with pytest.raises(NotSimulated, match="MoE"):
        simulate_start_row(row(model="qwen3-coder-30b-a3b", group="sleep-wake", metric="cold_start",
                               engine_mode="cuda_graphs"))
    with pytest.raises(NotSimulated, match="not in presets"):
        simulate_start_row(row(model="falcon-40b"))
    with pytest.raises(NotSimulated, match="loader"):
        simulate_start_row(row(engine_mode="loader=tensorizer"))
    with pytest.raises(NotSimulated, match="sleep level 2"):
        simulate_start_row(row(group="sleep-wake", metric="wake", engine_mode="sleep_level_2"))
    detail = simulate_start_row_detail(row(group="engine-start", gpu="unknown", metric="engine_init",
                                           engine_mode="cuda_graphs"))
    assert "simulated on A100-80GB" in detail.note


# ---------------------------------------------------------------- engine init
def test_cuda_graph_capture_is_the_start_cost_difference_of_the_two_modes() -> None:
    init = dict(group="engine-start", source="vllm-pr-11005", gpu="A100-80GB", model="llama-3.1-8b",
                metric="engine_init")
    graphs = simulate_start_row_detail(row(**init, engine_mode="cuda_graphs"))
    eager = simulate_start_row_detail(row(**init, engine_mode="eager"))
    # vllm-pr-11005: 14.18 s of init, 10 s of it graph capture (35 batch sizes x 32 layers)
    assert graphs.value == pytest.approx(14.18, rel=0.05)
    assert graphs.components["graph_capture_s"] == pytest.approx(10.0)
    assert graphs.value - eager.value == pytest.approx(10.0)
    assert eager.components["graph_capture_s"] == 0.0
    # capture scales with layers: an 80-layer model captures 80/32 as long
    big = simulate_start_row_detail(row(**{**init, "model": "llama-2-70b"}, tp=4, engine_mode="cuda_graphs"))
    assert big.components["graph_capture_s"] == pytest.approx(35 * 80 * GRAPH_CAPTURE_S_PER_LAYER_SIZE)
    assert capture_sizes(256) == 35 and capture_sizes(32) == 7 and capture_sizes(33) == 8 and capture_sizes(1) == 1


def test_engine_init_option_replaces_the_derived_init_and_process_start_adds() -> None:
    wl = workload([0.0])

    def init_event(**options):
        ev = simulate(wl, small_cluster(gpus=1), "vllm-ondemand", options=options).events
        return {k: v for k, v in event_fields(ev[ev["kind"] == "init_done"]).iloc[0].items() if k.endswith("_s")}

    derived = init_event()
    assert derived["init_s"] == pytest.approx(derived["fixed_s"] + derived["profile_s"] + derived["graph_capture_s"])
    assert init_event(engine_init_s=3.0)["init_s"] == 3.0
    assert init_event(engine_init_s="auto")["init_s"] == derived["init_s"]
    assert init_event(cuda_graphs=False)["graph_capture_s"] == 0.0
    ev = simulate(wl, small_cluster(gpus=1), "vllm-ondemand", options={"engine_init_s": 3.0, "process_start_s": 1.5}).events
    ready = event_fields(ev[ev["kind"] == "instance_ready"]).iloc[0]
    load = SEVEN_B * (1 / SSD + 1 / LOADERS["safetensors"].host_copy_bytes_per_s)
    assert ready["startup_s"] == pytest.approx(load + 3.0 + 1.5, rel=1e-6)


# ---------------------------------------------------------------- each system's engine token budget
def test_profile_run_covers_each_systems_engine_token_budget() -> None:
    """vllm-ondemand's engines take the reference's --max-num-batched-tokens=100000; ServerlessLLM
    passes none, so its profile run and prefill batches use vLLM's default max(max_model_len, 2048)."""
    from systems.sim.perf import PerfModel
    from systems.sim.specs import GPUS
    from systems.sim.startup import engine_init, vllm_default_batched_tokens

    assert vllm_default_batched_tokens(2048) == 2048 and vllm_default_batched_tokens(4096) == 4096
    assert vllm_default_batched_tokens(0) == 2048
    perf = PerfModel(MODELS["llama-2-7b"], GPUS["A100-80GB"], 1)

    def profile_s(budget: int, max_model_len: int = 2048) -> float:
        return engine_init(perf, max_num_batched_tokens=budget, max_num_seqs=256, max_model_len=max_model_len,
                           cuda_graphs=True).profile_s

    def init_parts(system: str, **options) -> dict[str, float]:
        ev = simulate(workload([0.0]), small_cluster(gpus=1), system, options=options).events
        return {k: v for k, v in event_fields(ev[ev["kind"] == "init_done"]).iloc[0].items() if k.endswith("_s")}

    assert init_parts("vllm-ondemand")["profile_s"] == pytest.approx(profile_s(100_000), rel=1e-3)
    assert init_parts("serverlessllm")["profile_s"] == pytest.approx(profile_s(2048), rel=1e-3)
    assert init_parts("serverlessllm", max_model_len=4096)["profile_s"] == pytest.approx(profile_s(4096, 4096),
                                                                                           rel=1e-3)
    assert init_parts("serverlessllm", engine_max_num_batched_tokens=100_000)["profile_s"] == pytest.approx(
        profile_s(100_000), rel=1e-3)
    assert profile_s(2048) < profile_s(100_000) / 10

    # the same budget bounds its prefill batches: eight 1000-token prompts arriving together take
    # one prefill at 100000 tokens, several at 2048
    burst = workload([0.0] * 8, input_tokens=1000, output_tokens=8)

    def first_token_spread_s(**options) -> float:
        q = simulate(burst, small_cluster(gpus=1), "serverlessllm", options=options).requests
        return float(q["first_token_s"].max() - q["first_token_s"].min())

    assert first_token_spread_s(engine_max_num_batched_tokens=100_000) == pytest.approx(0.0, abs=1e-9)
    assert first_token_spread_s() > 0.0


# ---------------------------------------------------------------- each system's declared loader
def load_ends(result) -> list[dict[str, object]]:
    ev = result.events
    return event_fields(ev[ev["kind"] == "load_end"]).to_dict("records")


def test_vllm_ondemand_loads_safetensors_from_ssd() -> None:
    res = simulate(workload([0.0]), small_cluster(gpus=1), "vllm-ondemand")
    (end,) = load_ends(res)
    assert end["loader"] == "safetensors" and end["tier"] == "ssd"
    assert float(end["load_s"]) == pytest.approx(SEVEN_B * (1 / SSD + 1 / 3.5e9), rel=1e-6)


def test_serverlessllm_uses_its_loader_from_host_memory_and_from_ssd() -> None:
    sllm = LOADERS["serverlessllm"]
    cached = load_ends(simulate(workload([0.0]), small_cluster(gpus=1), "serverlessllm"))[0]
    assert cached["loader"] == "serverlessllm" and cached["tier"] == "host"
    assert float(cached["load_s"]) == pytest.approx(SEVEN_B / (PCIE * PINNED_DMA_EFFICIENCY) + sllm.fixed_s, rel=1e-6)
    cold = load_ends(simulate(workload([0.0]), small_cluster(gpus=1), "serverlessllm",
                              options={"host_memory_bytes": 0}))[0]
    assert cold["loader"] == "serverlessllm" and cold["tier"] == "ssd"
    # pipelined: the slower of the drive and its PCIe share sets the rate
    assert float(cold["load_s"]) == pytest.approx(SEVEN_B / min(SSD, PCIE * PINNED_DMA_EFFICIENCY) + sllm.fixed_s,
                                                  rel=1e-6)


def test_warmserve_copies_pinned_weights_and_dedicated_loads_nothing() -> None:
    res = simulate(workload([0.0]), small_cluster(gpus=1), "warmserve-no-prewarm")
    (end,) = load_ends(res)
    assert end["loader"] == "pinned" and end["tier"] == "host"
    assert float(end["load_s"]) == pytest.approx(SEVEN_B / (PCIE * PINNED_DMA_EFFICIENCY), rel=1e-6)
    for system in ("dedicated", "ideal", "muxserve"):
        assert load_ends(simulate(workload([0.0]), small_cluster(gpus=1), system)) == []


def test_sleep_mode_wake_copies_the_weights_back_without_engine_init() -> None:
    wake = simulate_start_row_detail(row(group="sleep-wake", metric="wake", engine_mode="sleep_level_1"))
    assert wake.components["init_s"] == 0.0
    # the copy at the pinned-DMA rate, plus the per-wake fixed cost (vllm-sleep-blog's Qwen3-0.6B wake)
    assert wake.value == pytest.approx(SEVEN_B / (PCIE * PINNED_DMA_EFFICIENCY) + WAKE_FIXED_S, rel=1e-6)


# ---------------------------------------------------------------- option bounds at the CLI
@pytest.mark.parametrize("option,value", [("process_start_s", "-1"), ("process_start_s", "nan"),
                                          ("engine_init_s", "automatic"), ("engine_init_s", "-2"),
                                          ("cuda_graphs", "maybe")])
def test_bad_start_options_exit_2(option: str, value: str, tmp_path: Path, capsys) -> None:
    rc = main(["sim", "--system", "vllm-ondemand", "--workload", "synthetic-week", "--out", str(tmp_path / "run"),
               "--option", f"{option}={value}"])
    err = capsys.readouterr().err
    assert rc == 2 and option in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
