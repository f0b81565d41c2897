"""Capacity search ([capacity] in an experiment): it brackets a known threshold in a logarithmic
number of probes, reports "> high" / "< low", resumes without rerunning, and refuses bad bounds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness import capacity, experiment, runner
from harness.contracts.errors import InputError
from tests.results.test_experiment import cli, write

BASE = """
name = "cap"
cluster = "paper-16gpu"
models = ["llama-2-7b"]
systems = ["warmserve", "muxserve"]
seeds = [0]
baseline = "muxserve"
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = 2.0
duration_s = 30.0
history_days = 1
[capacity]
param = "workload.params.total_rps"
low = 1.0
high = 64.0
attainment = 0.99
tolerance = 0.05
"""


def fake_grid(monkeypatch, attainment, calls: list[str] | None = None, status: str = "complete") -> list[str]:
    """Runs answer at once: slo_attainment = attainment(system, rate, seed); no workload is built."""
    calls = [] if calls is None else calls

    def run_grid(specs, exp_dir, code, workloads, backend, jobs, on_start, on_done):
        outs = []
        for spec in specs:
            calls.append(spec.run_id)
            rate = spec.point["total_rps"]
            outs.append(runner.RunOutcome(spec, status, summary={
                "slo_attainment": attainment(spec.point["system"], rate, spec.seed)}))
        return exp_dir, outs

    monkeypatch.setattr(runner, "run_grid", run_grid)
    monkeypatch.setattr(runner, "resolve_workloads", lambda specs, src="": {s.run_id: None for s in specs})
    return calls


def step(thresholds: dict[str, float]):
    """Attainment 1.0 up to the system's threshold, 0.9 above it."""
    return lambda system, rate, seed: 1.0 if rate <= thresholds[system] else 0.9


def search(tmp_path: Path, text: str = BASE):
    config, _ = experiment.load(write(tmp_path, text))
    return capacity.search(config, tmp_path / "results")


def test_search_brackets_a_known_threshold_in_log_probes(tmp_path, monkeypatch) -> None:
    calls = fake_grid(monkeypatch, step({"warmserve": 13.7, "muxserve": 5.3}))
    _, searches, doc = search(tmp_path)
    limit = capacity.max_probes(1.0, 64.0, 0.05)
    assert limit <= 10  # log2(log(64) / log(1.05)) ~ 6.4 bisections, plus high and low
    for s, threshold in zip(searches, (13.7, 5.3)):
        assert s.status == "found"
        assert s.passed <= threshold < s.failed
        assert s.failed / s.passed - 1 < 0.05
        assert len(s.probes) <= limit
        assert [p.rate for p in s.probes[:2]] == [64.0, 1.0]  # high first, then low
    assert len(calls) == sum(len(s.probes) for s in searches)  # one run per probe and seed
    assert doc["results"][0]["ratio"] == pytest.approx(searches[0].passed / searches[1].passed)
    assert doc["results"][1]["ratio_text"] == "1.00x"


def test_high_passes_and_low_fails(tmp_path, monkeypatch) -> None:
    fake_grid(monkeypatch, step({"warmserve": 100.0, "muxserve": 0.5}))
    _, searches, doc = search(tmp_path)
    warm, mux = searches
    assert (warm.status, warm.text(), [p.rate for p in warm.probes]) == ("above_high", "> 64", [64.0])
    assert (mux.status, mux.text(), [p.rate for p in mux.probes]) == ("below_low", "< 1", [64.0, 1.0])
    assert warm.passed == 64.0 and warm.failed is None and mux.passed is None and mux.failed == 1.0
    assert doc["results"][0]["ratio_text"] == "> 64.00x"  # a bound, never a made-up number


@pytest.mark.parametrize("rule, found", [("every_seed", 4.0), ("mean", 8.0)])
def test_seed_rule(tmp_path, monkeypatch, rule, found) -> None:
    """Seed 1 fails above 4 req/s, seed 0 above 8: every seed must pass, or their mean."""
    fake_grid(monkeypatch, lambda system, rate, seed: 1.0 if rate <= (8.0 if seed == 0 else 4.0) else
              (0.985 if rate <= 8.0 else 0.5))
    text = BASE.replace("seeds = [0]", "seeds = [0, 1]").replace('["warmserve", "muxserve"]', '["warmserve"]') \
        .replace('baseline = "muxserve"', "").replace("tolerance = 0.05", f"tolerance = 0.05\nrule = \"{rule}\"")
    _, (s,), _ = search(tmp_path, text)
    assert s.passed <= found < s.failed and s.failed / s.passed - 1 < 0.05
    assert all(len(p.runs) == 2 for p in s.probes)


def test_a_failed_run_stops_that_search(tmp_path, monkeypatch) -> None:
    fake_grid(monkeypatch, step({"warmserve": 10.0, "muxserve": 10.0}), status="failed")
    _, searches, doc = search(tmp_path)
    assert all(s.status == "error" and len(s.probes) == 1 for s in searches)
    assert doc["results"][0]["capacity"] is None and doc["complete"]
    code, out, _ = cli("run", str(write(tmp_path, BASE)), "--results", str(tmp_path / "r"))
    assert code == 1 and "failed" in out  # as any experiment whose run failed; no report to build


def test_baseline_flag(tmp_path, monkeypatch) -> None:
    fake_grid(monkeypatch, step({"warmserve": 13.7, "muxserve": 5.3}))
    code, _, _ = cli("run", str(write(tmp_path, BASE)), "--results", str(tmp_path / "r"), "--no-report",
                     "--baseline", "warmserve")
    doc = json.loads((tmp_path / "r" / "cap" / capacity.CAPACITY_FILE).read_text())
    assert code == 0 and doc["baseline"] == "warmserve" and doc["results"][0]["ratio_text"] == "1.00x"
    assert doc["results"][1]["ratio"] < 0.5


def test_real_simulator_resumes_and_writes_capacity_json(tmp_path, monkeypatch) -> None:
    """Probes are ordinary runs: a second invocation finds them all done and reruns nothing."""
    (tmp_path / "one.toml").write_text('name = "one"\n[[nodes]]\ngpu = "A100-80GB"\ngpus_per_node = 1\n')
    text = BASE.replace('["warmserve", "muxserve"]', '["muxserve"]').replace('baseline = "muxserve"', "") \
        .replace('"paper-16gpu"', '"one.toml"').replace("tolerance = 0.05", "tolerance = 0.25")
    path = write(tmp_path, text)  # one A100 serving Llama-2-7B: 4 req/s pass, 8 do not (measured)
    code_now = runner.current_code()
    monkeypatch.setattr(runner, "current_code", lambda: code_now)  # others editing this tree between runs
    code, out, _ = cli("run", str(path), "--results", str(tmp_path / "r"), "--jobs", "1", "--no-report")
    assert code == 0, out
    exp_dir = tmp_path / "r" / "cap"
    doc = json.loads((exp_dir / capacity.CAPACITY_FILE).read_text())
    assert {"param", "low", "high", "attainment", "tolerance", "rule", "seeds", "slo", "baseline", "complete",
            "results"} <= set(doc) and doc["complete"]
    (result,) = doc["results"]
    assert {"system", "point", "status", "capacity", "capacity_text", "passed", "failed", "ratio", "ratio_text",
            "probes"} <= set(result)
    rates = [p["rate"] for p in result["probes"]]
    assert rates[:3] == [64.0, 1.0, 8.0] and len(rates) == len(set(rates))
    assert result["status"] == "found" and 4.0 <= result["passed"] < result["failed"] <= 8.0
    assert len(rates) <= capacity.max_probes(1.0, 64.0, 0.25)
    for probe in result["probes"]:
        (run,) = probe["runs"]
        manifest = json.loads((exp_dir / run["run_id"] / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["point"]["total_rps"] == probe["rate"]
        summary = json.loads((exp_dir / run["run_id"] / "summary.json").read_text())
        assert summary["models"]["all"]["slo_attainment"] == run["slo_attainment"] == probe["attainment"]
        assert probe["passed"] == (probe["attainment"] >= 0.99)
    runs = json.loads((exp_dir / "experiment.json").read_text())["runs"]
    assert runs == [p["runs"][0]["run_id"] for p in result["probes"]]

    def no_run(*args, **kwargs):
        raise AssertionError("a probe was rerun")

    monkeypatch.setattr(runner, "execute", no_run)
    code, out, _ = cli("run", str(path), "--results", str(tmp_path / "r"), "--jobs", "1", "--no-report")
    assert code == 0, out
    again = json.loads((exp_dir / capacity.CAPACITY_FILE).read_text())["results"]
    assert [p["runs"][0]["status"] for p in again[0]["probes"]] == ["skipped"] * len(rates)
    for p in again[0]["probes"] + doc["results"][0]["probes"]:
        p["runs"][0].pop("status")
    assert again == doc["results"]
    assert not (exp_dir / ".history").exists()


@pytest.mark.parametrize("edit, field", [
    (("high = 64.0", "high = 0.5"), "capacity"),               # high below low
    (("low = 1.0", "low = -1.0"), "capacity.low"),
    (("attainment = 0.99", "attainment = 1.5"), "capacity.attainment"),
    (("tolerance = 0.05", "tolerance = 0"), "capacity.tolerance"),
    (("tolerance = 0.05", "tolerance = \"5%\""), "capacity.tolerance"),
    (("tolerance = 0.05", "tolerance = 0.05\nstep = 2"), "capacity.step"),
    (('param = "workload.params.total_rps"', 'param = "workload.params.rate"'), "capacity.param"),
    (('param = "workload.params.total_rps"', 'param = "total_rps"'), "capacity.param"),
    (("total_rps = 2.0", "total_rps = [2.0, 4.0]"), "workload.params.total_rps"),
    (("total_rps = 2.0", "total_rps = \"fast\""), "workload.params.total_rps"),
])
def test_bad_capacity_values_exit_2_naming_the_key(tmp_path, edit, field) -> None:
    path = write(tmp_path, BASE.replace(*edit))
    with pytest.raises(InputError) as info:
        experiment.load(path)
    assert info.value.field == field and info.value.file == str(path)
    code, out, err = cli("run", str(path), "--results", str(tmp_path / "r"))
    assert code == 2 and f"'{field}'" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written


def test_a_bound_beyond_the_workload_range_names_capacity_high(tmp_path) -> None:
    path = write(tmp_path, BASE.replace("high = 64.0", "high = 1e9"))
    code, _, err = cli("run", str(path), "--results", str(tmp_path / "r"))
    assert code == 2 and "'capacity.high'" in err, err
    assert not (tmp_path / "r").exists()


def test_midpoints_are_short_and_inside() -> None:
    assert capacity.round_between(1.0, 64.0) == 8.0
    assert capacity.round_between(41.0, 44.2) == pytest.approx(42.6)
    mid = capacity.round_between(1.0, 1.0001)
    assert 1.0 < mid < 1.0001 and math.isfinite(mid)


def test_presets_load_with_their_quick_variant() -> None:
    for quick in (False, True):
        config, _ = experiment.load("capacity-muxserve", quick=quick)
        assert config.capacity is not None and config.options["cuda_graphs"] is False
        assert [s for s in config.systems] == ["warmserve", "muxserve"]


def test_ctrl_c_exits_130_and_keeps_what_is_known(tmp_path, monkeypatch) -> None:
    rounds = []

    def run_grid(specs, exp_dir, code, workloads, backend, jobs, on_start, on_done):
        rounds.append(specs)
        if len(rounds) == 2:
            raise runner.GridInterrupted(exp_dir, [], specs)
        return exp_dir, [runner.RunOutcome(s, "complete", summary={"slo_attainment": 0.5}) for s in specs]

    monkeypatch.setattr(runner, "run_grid", run_grid)
    monkeypatch.setattr(runner, "resolve_workloads", lambda specs, src="": {s.run_id: None for s in specs})
    path = write(tmp_path, BASE)
    code, out, _ = cli("run", str(path), "--results", str(tmp_path / "r"), "--no-report")
    assert code == 130 and "interrupted" in out
    doc = json.loads((tmp_path / "r" / "cap" / capacity.CAPACITY_FILE).read_text())
    assert doc["complete"] is False and [len(r["probes"]) for r in doc["results"]] == [1, 1]
    assert {r["status"] for r in doc["results"]} == {"unfinished"}


def test_report_section() -> None:
    doc = {"param": "workload.params.total_rps", "low": 1.0, "high": 64.0, "attainment": 0.99, "tolerance": 0.05,
           "rule": "every_seed", "seeds": [0], "slo": {"ttft_s": 1.0, "tpot_s": 0.1}, "baseline": "muxserve",
           "complete": True, "results": [
               {"system": "warmserve", "point": {}, "capacity_text": "41", "passed": 41.0, "failed": 42.6,
                "probes": [{}] * 8, "ratio_text": "2.14x"}]}
    from harness.report import capacity_table

    lines = capacity_table.markdown(doc)
    assert lines[0] == "## Capacity" and "| warmserve | - | 41 | 41 | 42.6 | 8 | 2.14x |" in lines
    assert "<td>2.14x</td>" in capacity_table.to_html(doc)
