"""The statistical gate (`compare --fail-if`, default `--mode interval`): interval math, decisions,
seed checks, exit codes 0 / 1 / 2 / 3, and the acceptance on real simulator runs: a planted 20% P99
TTFT regression is caught with the nightly preset's default seeds, an unchanged revision is not."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import tomllib
from pathlib import Path

import pytest

from harness import experiment, runner
from harness.cli import main
from harness.contracts.errors import EXIT_INCONCLUSIVE
from harness.metrics import paired_ratio_ci
from harness.report.compare import Bound
from harness.report.gate import FAIL, INCONCLUSIVE, PASS, Decision, decide, outcome
from harness.stats import T95_TABLE, t_cdf, t_quantile
from tests.results.factory import write_experiment

UP10 = Bound("p99_ttft_s", "+", 10.0)


def cli(*args: str) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


# --- interval math

def test_t_quantile_matches_published_values() -> None:
    assert [t_quantile(0.95, df) for df in range(1, 31)] == list(T95_TABLE)
    for df, q in enumerate(T95_TABLE, start=1):  # the computed quantile agrees with the table to its 3 decimals
        assert t_quantile(0.9500000001, df) == pytest.approx(q, abs=6e-4)
    assert t_quantile(0.99, 1) == pytest.approx(63.657, abs=1e-3)
    assert t_quantile(0.90, 4) == pytest.approx(2.132, abs=1e-3)
    assert t_quantile(0.999, 10) == pytest.approx(4.587, abs=1e-3)
    assert t_quantile(0.95, 1000) == pytest.approx(1.962, abs=1e-3)  # tends to the normal's 1.96
    assert t_cdf(0.0, 3) == 0.5 and t_cdf(-1.0, 1) == pytest.approx(0.25)  # Cauchy: atan
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_paired_ratio_ci_takes_a_confidence() -> None:
    cand, base = [1.1, 1.3, 1.2, 1.25, 1.15], [1.0] * 5
    logs = [math.log(c) for c in cand]
    mean = sum(logs) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 4)
    for confidence, t in ((0.95, 2.776), (0.90, 2.131847)):
        lo, hi = paired_ratio_ci(cand, base, confidence=confidence)
        half = t * sd / math.sqrt(5)
        assert (lo, hi) == pytest.approx((math.exp(mean - half), math.exp(mean + half)), rel=1e-5)
    assert paired_ratio_ci(cand, base, confidence=0.99)[0] < paired_ratio_ci(cand, base)[0]


# --- decisions

def test_decide_is_the_report_interval_against_the_limit() -> None:
    base = [1.0, 2.0, 4.0, 1.0, 3.0]
    worse = [b * r for b, r in zip(base, [1.20, 1.22, 1.19, 1.21, 1.18])]
    iv = decide(base, worse, UP10)
    assert (iv.low, iv.high) == paired_ratio_ci(worse, base) and iv.n == 5
    assert iv.decision == FAIL and iv.low > 1.10 and "wholly beyond 1.100" in iv.why
    assert iv.ratio == pytest.approx(math.sqrt(iv.low * iv.high))  # the geometric mean: the centre
    same = [b * r for b, r in zip(base, [1.0, 1.01, 0.99, 1.0, 1.02])]
    assert decide(base, same, UP10).decision == PASS
    noisy = [b * r for b, r in zip(base, [0.9, 1.3, 1.1, 1.25, 1.0])]
    iv = decide(base, noisy, UP10)
    assert iv.decision == INCONCLUSIVE and iv.low < 1.10 < iv.high and "cannot decide" in iv.why
    # identical seeds: a zero-width interval at 1 passes even a 0% bound
    assert decide(base, base, Bound("p99_ttft_s", "+", 0.0)).decision == PASS


def test_a_fall_bound_mirrors_a_rise_bound() -> None:
    down5 = Bound("slo_attainment", "-", 5.0)
    base = [0.90, 0.95, 0.97]
    assert decide(base, [b * 0.80 for b in base], down5).decision == FAIL
    assert decide(base, [b * 0.80 for b in base], UP10).decision == PASS  # a fall never crosses a rise bound
    assert decide(base, [b * 1.2 for b in base], down5).decision == PASS
    assert decide(base, [b * r for b, r in zip(base, [0.85, 1.05, 0.97])], down5).decision == INCONCLUSIVE


def test_too_few_seeds_zeros_and_missing_values() -> None:
    iv = decide([1.0], [2.0], UP10)
    assert iv.decision == INCONCLUSIVE and iv.low is None and "1 paired seed(s)" in iv.why and iv.ratio == 2.0
    iv = decide([1.0, 1.0, 1.0], [1.5, 1.5, 1.5], UP10, min_seeds=4)
    assert iv.decision == INCONCLUSIVE and "at least 4 (--min-seeds)" in iv.why
    assert decide([1.0, 1.0, 1.0], [1.5, 1.5, 1.5], UP10, min_seeds=3).decision == FAIL
    assert decide([0.0, 0.0], [0.0, 0.0], UP10).decision == PASS       # 0 and 0: a ratio of 1
    iv = decide([0.0, 1.0], [3.0, 1.0], UP10)                           # 0 -> 3: no log ratio
    assert iv.decision == INCONCLUSIVE and "no ratio" in iv.why
    iv = decide([1.0, math.nan, 1.0], [1.0, 5.0, 1.0], UP10)            # a seed the base lacks: left out
    assert iv.n == 2 and iv.decision == PASS
    assert decide([1.0, 1.0], [1.5, 1.5], None).decision is None        # no bound: an interval, no decision


def test_outcome_fail_anywhere_wins_over_inconclusive() -> None:
    def row(decision: str) -> Decision:
        return Decision("a", {}, "all", "p99_ttft_s", str(UP10), [0], 1.0, 1.0, 1, 1.0, None, None, decision, "")
    assert outcome(0, [row(PASS), row(PASS)]) == PASS
    assert outcome(0, [row(PASS), row(INCONCLUSIVE)]) == INCONCLUSIVE
    assert outcome(0, [row(INCONCLUSIVE), row(FAIL)]) == FAIL
    assert outcome(1, [row(PASS)]) == FAIL  # a trust problem fails whatever the numbers


# --- the command line on hand-made experiments

def scale_metric(root: Path, system: str, metric: str, factors: dict[int, float]) -> None:
    """Multiply `metric` of `system`'s run of each seed (every model) by its factor."""
    for seed, factor in factors.items():
        for run in root.glob(f"{system}_*_seed-{seed}"):
            summary = json.loads((run / "summary.json").read_text())
            for values in summary["models"].values():
                values[metric] *= factor
            (run / "summary.json").write_text(json.dumps(summary))


def test_one_seed_is_inconclusive_exit_3_and_per_seed_mode_still_decides(tmp_path) -> None:
    base = write_experiment(tmp_path / "base")
    slow = write_experiment(tmp_path / "slow", slow={"b": 1.5})
    proc = cli("compare", str(base), str(slow), "--fail-if", "p50_ttft_s:+10%")
    assert proc.returncode == EXIT_INCONCLUSIVE == 3, proc.stdout
    assert "INCONCLUSIVE p50_ttft_s:+10%" in proc.stdout and "1 paired seed(s)" in proc.stdout
    assert "gate inconclusive" in proc.stdout
    data = json.loads(cli("compare", str(base), str(slow), "--fail-if", "p50_ttft_s:+10%", "--json").stdout)
    assert data["outcome"] == "inconclusive" and data["passed"] is False and data["failed"] == []
    assert data["inconclusive"] and all(d["n"] == 1 for d in data["inconclusive"])
    assert cli("compare", str(base), str(slow), "--fail-if", "p50_ttft_s:+10%", "--mode", "per-seed").returncode == 1


def test_seeds_decide_a_regression_and_an_unchanged_candidate(tmp_path) -> None:
    base = write_experiment(tmp_path / "base", seeds=(0, 1, 2))
    same = write_experiment(tmp_path / "same", seeds=(0, 1, 2))
    slow = write_experiment(tmp_path / "slow", slow={"b": 1.5}, seeds=(0, 1, 2))
    ok = cli("compare", str(base), str(same), "--fail-if", "p50_ttft_s:+10%")
    assert ok.returncode == 0 and "bound(s) hold on the paired 95% interval" in ok.stdout
    bad = cli("compare", str(base), str(slow), "--fail-if", "p50_ttft_s:+10%", "--json")
    data = json.loads(bad.stdout)
    assert bad.returncode == 1 and data["outcome"] == "fail"
    assert {d["system"] for d in data["failed"]} == {"b"} and all(d["low"] > 1.1 and d["n"] == 3 for d in data["failed"])
    text = cli("compare", str(base), str(slow), "--fail-if", "p50_ttft_s:+10%").stdout
    assert "FAIL p50_ttft_s:+10%" in text and "interval" in text and "seeds" in text


def test_confidence_and_min_seeds(tmp_path) -> None:
    base = write_experiment(tmp_path / "base", seeds=(0, 1, 2))
    cand = write_experiment(tmp_path / "cand", seeds=(0, 1, 2))
    scale_metric(cand, "b", "p50_ttft_s", {0: 1.15, 1: 1.25, 2: 1.20})  # clearly up, but only three seeds
    bound = ("--fail-if", "p50_ttft_s:+10%")
    assert cli("compare", str(base), str(cand), *bound).returncode == 3           # t(2) = 4.303: too wide
    assert cli("compare", str(base), str(cand), *bound, "--confidence", "0.8").returncode == 1
    proc = cli("compare", str(base), str(cand), *bound, "--confidence", "0.8", "--min-seeds", "4")
    assert proc.returncode == 3 and "3 paired seed(s); an interval needs at least 4" in " ".join(proc.stdout.split())
    for bad in (("--confidence", "1.5"), ("--confidence", "x"), ("--min-seeds", "1"), ("--seeds", "0,0")):
        proc = cli("compare", str(base), str(cand), *bound, *bad)
        assert proc.returncode == 2 and bad[0] in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_seeds_select_what_both_sides_ran(tmp_path) -> None:
    base = write_experiment(tmp_path / "base", seeds=(0, 1, 2))
    cand = write_experiment(tmp_path / "cand", seeds=(0, 1))
    bound = ("--fail-if", "p99_ttft_s:+10%")
    data = json.loads(cli("compare", str(base), str(cand), *bound, "--json").stdout)
    assert data["outcome"] == "fail" and {p["kind"] for p in data["problems"]} == {"missing"}
    assert cli("compare", str(base), str(cand), *bound, "--seeds", "0,1").returncode == 0
    proc = cli("compare", str(base), str(cand), *bound, "--seeds", "0,2")
    assert proc.returncode == 2 and "seed(s) 2 not among the candidate's runs" in " ".join(proc.stderr.split())


def test_trust_checks_fail_in_the_default_mode_too(tmp_path) -> None:
    base = write_experiment(tmp_path / "base", seeds=(0, 1, 2))
    cand = write_experiment(tmp_path / "cand", seeds=(0, 1, 2))
    manifest = cand / "b_total_rps-5_seed-1" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "status": "failed"}))
    data = json.loads(cli("compare", str(base), str(cand), "--fail-if", "p99_ttft_s:+10%", "--json").stdout)
    assert data["outcome"] == "fail" and [p["kind"] for p in data["problems"]] == ["candidate_failed"]
    one = write_experiment(tmp_path / "one")  # one seed: inconclusive rows, and a failed run: the fail wins
    one_cand = write_experiment(tmp_path / "one_cand")
    manifest = one_cand / "a_total_rps-2_seed-0" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "status": "failed"}))
    data = json.loads(cli("compare", str(one), str(one_cand), "--fail-if", "p99_ttft_s:+10%", "--json").stdout)
    assert data["outcome"] == "fail" and data["inconclusive"]


# --- the planted regression: a test-only simulator option

def test_test_slowdown_scales_every_iteration_and_is_bounded() -> None:
    from systems.sim.perf import PerfModel
    from systems.sim.specs import GPUS, model_spec

    spec, gpu = model_spec("llama-2-13b"), GPUS["A100-80GB"]
    plain, slow = PerfModel(spec, gpu, 1, cuda_graphs=False), PerfModel(spec, gpu, 1, cuda_graphs=False, test_slowdown=1.2)
    assert slow.prefill_s(512, 2, 2 * 256**2) == pytest.approx(1.2 * plain.prefill_s(512, 2, 2 * 256**2))
    assert slow.decode_s(8, 4000) == pytest.approx(1.2 * plain.decode_s(8, 4000))
    assert slow.mixed_s(256, 1, 256**2, 8, 4000) == pytest.approx(1.2 * plain.mixed_s(256, 1, 256**2, 8, 4000))


def test_test_slowdown_slows_the_run_it_is_given_and_nothing_else() -> None:
    from harness.contracts.errors import InputError
    from harness.metrics import summarize
    from systems.sim import simulate

    config, _ = experiment.load("nightly", quick=True)
    spec = next(s for s in experiment.grid(config) if s.system == "warmserve")
    workload = runner.resolve_workload(spec)

    def sim(**extra):
        return simulate(workload, spec.cluster, spec.system, options={**spec.options, **extra}, seed=spec.seed,
                        duration_s=spec.duration_s).requests

    plain = sim()
    assert sim(test_slowdown=1.0).equals(plain)  # factor 1 is the unchanged simulator
    p99 = summarize(plain)["all"]["p99_ttft_s"], summarize(sim(test_slowdown=1.2))["all"]["p99_ttft_s"]
    assert p99[1] > 1.05 * p99[0]
    for bad in (0.5, 101, "fast"):
        with pytest.raises(InputError, match="test_slowdown"):
            sim(test_slowdown=bad)


# --- acceptance on the real simulator, with the nightly preset's default seeds

def test_planted_20pct_p99_regression_is_caught_and_an_unchanged_revision_is_not(tmp_path) -> None:
    preset = experiment.preset_path("nightly")
    config, _ = experiment.load(preset)
    assert len(config.seeds) >= 2  # the gate needs two seeds to decide anything
    text = preset.read_text()
    quick_s = tomllib.loads(text)["quick"]["workload.params.duration_s"]
    duration, systems = "duration_s = 300.0", 'systems = ["serverlessllm", "vllm-ondemand", "muxserve", "warmserve"]'
    assert duration in text and systems in text and text.count("\n[quick]\n") == 1
    # the preset with its default seeds and its quick duration (its [quick] also cuts the seeds to one)
    nightly = text.split("\n[quick]\n")[0].replace(duration, f"duration_s = {quick_s}")
    (tmp_path / "nightly.toml").write_text(nightly)
    planted = tmp_path / "planted" / "nightly.toml"  # the same, warmserve 20% slower per engine iteration
    planted.parent.mkdir()
    planted.write_text(nightly.replace(systems, 'systems = ["serverlessllm", "vllm-ondemand", "muxserve", '
                                                '{name = "warmserve", options = {test_slowdown = 1.2}}]'))
    for name, source in (("base", tmp_path / "nightly.toml"), ("again", tmp_path / "nightly.toml"), ("slow", planted)):
        proc = cli("run", str(source), "--results", str(tmp_path / name), "--no-report")
        assert proc.returncode == 0, proc.stderr
    base, again, slow = (str(tmp_path / n / "nightly") for n in ("base", "again", "slow"))
    bound = ("--fail-if", "p99_ttft_s:+10%")

    proc = cli("compare", base, again, *bound, "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["outcome"] == "pass"
    assert data["decisions"] and all(d["n"] == len(config.seeds) for d in data["decisions"])

    proc = cli("compare", base, slow, *bound, "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["problems"] == []
    assert {(d["system"], d["model"]) for d in data["failed"]} >= {("warmserve", "all")}
    assert {d["system"] for d in data["failed"]} == {"warmserve"}  # the others are unchanged: they pass
    row = next(d for d in data["failed"] if d["model"] == "all")
    assert row["low"] > 1.10 and row["ratio"] > 1.15


# --- the measurement: `bench gate`

def test_bench_gate_measures_nights_through_the_gate() -> None:
    from harness.bench import gate as bench

    result = bench.run(nights=1, seeds=2, jobs=1)
    assert result["seeds_per_side"] == 2 and result["simulations"] == 4 * (4 + len(bench.PLANTED))
    shares = result["scenarios"]
    assert set(shares) == {"unchanged, fresh seeds", "unchanged, same seeds", "planted 5%, fresh seeds",
                           "planted 20%, fresh seeds", "planted 5%, same seeds", "planted 20%, same seeds"}
    assert shares["unchanged, same seeds"] == {"fail": 0.0, "inconclusive": 0.0, "pass": 1.0}  # deterministic
    assert all(math.isclose(sum(s.values()), 1.0) for s in shares.values())
    rise = result["planted_p99_ttft_rise"]
    assert 0.0 < rise["5%"] < rise["20%"] and 0.1 < rise["20%"] < 0.35  # the factors plant about what they say


def test_bench_gate_options_are_checked() -> None:
    proc = cli("bench", "gate", "--fail-if", "nope:+1%")
    assert proc.returncode == 2 and "unknown metric 'nope'" in proc.stderr
    proc = cli("bench", "sim", "--nights", "3")
    assert proc.returncode == 2 and "apply to `bench gate`" in proc.stderr
    assert cli("bench", "gate", "--nights", "0").returncode == 2
