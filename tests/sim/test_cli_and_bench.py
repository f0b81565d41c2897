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


def test_sim_command_prints_what_summary_json_holds(tmp_path: Path, capsys):
    # the terminal's TTFT, split and start kinds are summary.json's (harness.metrics), not a second
    # computation over ok requests (which, e.g., counted a warm start's missing load as 0 s)
    from harness.report.table import fmt

    wl = write_workload(tmp_path / "wl.csv")
    out = tmp_path / "run"
    assert main(["sim", "--system", "serverlessllm", "--workload", str(wl), "--duration-s", "50",
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())["models"]["all"]
    printed = " ".join(capsys.readouterr().out.split())
    assert (f"TTFT mean {fmt('x_s', s['mean_ttft_s'])}, P50 {fmt('x_s', s['p50_ttft_s'])}, "
            f"P99 {fmt('x_s', s['p99_ttft_s'])}") in printed, printed
    assert f"load {fmt('x_s', s['mean_load_s'])}," in printed and f"cold {s['start_cold']:.0f}" in printed, printed
    assert 0 < s["start_cold"] < s["requests"]


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


#: The operators of one layer in Vidur's mlp.csv (data/profiling/compute/<gpu>/<org>/<model>/mlp.csv
#: of microsoft/vidur); every one has min/max/mean/median/std columns in milliseconds.
VIDUR_OPS = ("emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
             "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
#: Two model shapes (heads, kv heads, hidden, intermediate, vocab): Llama-2 7B and 70B (GQA).
SHAPES = {"Llama-2-7b-hf": (32, 32, 4096, 11008, 32000), "Llama-2-70b-hf": (64, 8, 8192, 28672, 32000)}


def write_vidur_profiles(root: Path, coeffs, scale: float = 1.0) -> Path:
    """Generated profiles in Vidur's mlp.csv layout (a100 only): per (tokens, TP), the layer time
    the roofline gives with `coeffs`, times `scale`, split over the operators' median columns; the
    other statistics are decoys (a reader summing them would be far off)."""
    from systems.sim.perf import PerfModel
    from systems.sim.specs import GPUS, ModelSpec

    weights = np.linspace(1.0, 2.0, len(VIDUR_OPS))
    weights /= weights.sum()
    for name, (heads, kv, hidden, inter, vocab) in SHAPES.items():
        spec = ModelSpec(name, 1, hidden, heads, kv, inter, vocab, 0)
        rows = []
        for tp in (1, 2, 4):
            pm = PerfModel(spec, GPUS["A100-80GB"], tp, coeffs)
            for n in (1, 2, 8, 32, 100, 256, 700, 1024, 2048, 4096):
                total_ms = pm.linear_layer_s(n) * 1e3 * scale
                row = {}
                for op, w in zip(VIDUR_OPS, weights):
                    med = total_ms * w
                    row.update({f"time_stats.{op}.min": med * 0.9, f"time_stats.{op}.max": med * 3,
                                f"time_stats.{op}.mean": med * 1.5, f"time_stats.{op}.median": med,
                                f"time_stats.{op}.std": med * 0.1})
                row.update(n_head=heads, n_kv_head=kv, n_embd=hidden, n_expanded_embd=inter, vocab_size=vocab,
                           use_gated_mlp=True, num_tokens=n, num_tensor_parallel_workers=tp)
                rows.append(row)
        out = root / "a100" / "meta-llama" / name
        out.mkdir(parents=True)
        pd.DataFrame(rows).to_csv(out / "mlp.csv", index=False)
    return root


def test_profile_error_reads_vidur_medians_and_reports_the_error_by_token_count(tmp_path: Path):
    from systems.sim.perf import coefficients_for
    from systems.sim.specs import GPUS

    root = write_vidur_profiles(tmp_path, coefficients_for(GPUS["A100-80GB"]), scale=1.25)
    report = profile_error(root=root)
    assert set(report["profiles"]) == {"a100/Llama-2-7b-hf", "a100/Llama-2-70b-hf"}
    for row in report["profiles"].values():
        assert row["rows"] == 30
        # the model is 1/1.25 = 80% of every measurement: 20% off in every bucket
        assert row["all"] == 20.0 and set(row["by_tokens"].values()) == {20.0}
    assert set(report["profiles"]["a100/Llama-2-7b-hf"]["by_tokens"]) == {"1", "2-16", "17-128", "129-512",
                                                                          "513-2048", "2049+"}
    assert profile_error(root=tmp_path / "absent") is None


def test_fit_linear_recovers_the_coefficients_that_made_the_profiles(tmp_path: Path):
    from systems.sim.calibrate import fit_linear
    from systems.sim.perf import coefficients_for
    from systems.sim.specs import GPUS

    base = coefficients_for(GPUS["A100-80GB"])
    truth = base.with_values(flops_eff=0.55, hbm_eff=0.8, layer_fixed_s=40e-6, layer_token_s=2e-9)
    fitted, rms = fit_linear("A100-80GB", base=base, root=write_vidur_profiles(tmp_path, truth))
    assert rms < 0.01
    assert (fitted.flops_eff, fitted.hbm_eff) == (0.55, 0.8)
    assert fitted.layer_fixed_s == pytest.approx(40e-6, rel=0.02)
    assert fitted.layer_token_s == pytest.approx(2e-9, rel=0.05)
    with pytest.raises(FileNotFoundError, match="H100-80GB"):
        fit_linear("H100-80GB", root=tmp_path)


def test_roofline_tracks_vidur_profiles():
    """The real profiles (../shared/profiles/vidur, not shipped: their SOURCE.md asks not to copy them)."""
    if not PROFILES_DIR.exists():
        pytest.skip(f"Vidur profiles not found at {PROFILES_DIR} (../shared is absent)")
    report = profile_error()
    assert len(report["profiles"]) == 6
    for name, row in report["profiles"].items():
        assert row["all"] < 10, name                        # median error over all token counts
        assert max(row["by_tokens"].values()) < 25, name   # and in every token-count bucket
