"""Experiment files: validation that names the key, the sweep grid, and runs on the real simulator with resume."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from harness import experiment, identity, runner
from harness.cli import main
from harness.contracts.errors import InputError, WarmbenchError
from harness.store import read_run

TINY = """
name = "tiny"
cluster = "paper-16gpu"
models = ["llama-2-7b", "llama-2-13b"]
systems = ["dedicated", "vllm-ondemand"]
seeds = [0]
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = [2.0, 4.0]
duration_s = 60.0
history_days = 1
[quick]
"workload.params.total_rps" = [2.0]
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), " ".join(err.getvalue().split())


@pytest.mark.parametrize("text, field", [
    ('backend = "cloud"', "backend"),
    ('seeds = "zero"', "seeds"),
    ('colour = "red"', "colour"),
    ('[slo]\nttft_s = -1', "slo.ttft_s"),
    ('systems = []', "systems"),
])
def test_validation_errors_name_the_key(tmp_path, text, field) -> None:
    top = field.split(".")[0]
    body = "\n".join(line for line in TINY.splitlines() if not line.startswith(f"{top} ="))
    head, rest = body.split("[workload]", 1)
    path = write(tmp_path, f"{body}\n{text}\n" if text.startswith("[") else f"{head}\n{text}\n[workload]{rest}")
    with pytest.raises(InputError) as info:
        experiment.load(path)
    assert info.value.field == field and info.value.file == str(path)
    code, _, err = cli("run", str(path))
    assert code == 2 and f"field '{field}'" in err and "Traceback" not in err


def test_missing_file_and_bad_toml_exit_2(tmp_path) -> None:
    code, _, err = cli("run", str(tmp_path / "nope.toml"))
    assert code == 2 and "no such experiment file" in err
    code, _, err = cli("run", str(write(tmp_path, "name = [")))
    assert code == 2 and "not valid TOML" in err
    code, _, err = cli("run", "no-such-preset")
    assert code == 2 and "no experiment preset 'no-such-preset'" in err


def test_grid_is_the_product_of_list_valued_fields(tmp_path) -> None:
    text = TINY.replace("seeds = [0]", "seeds = [0, 1]\noptions = {engine_init_s = [2.0, 4.0]}") \
        .replace("history_days = 1", "history_days = 1\nalpha = [0.5, 1.0]\nmodels = [[\"llama-2-7b\"]]")
    config, _ = experiment.load(write(tmp_path, text))
    specs = experiment.grid(config)
    assert len(specs) == 2 * 2 * 2 * 2 * 2  # systems x total_rps x alpha x engine_init_s x seeds
    first = specs[0]
    assert first.point == {"system": "dedicated", "total_rps": 2.0, "alpha": 0.5, "engine_init_s": 2.0, "seed": 0}
    assert first.run_id == "dedicated_total_rps-2_alpha-0.5_engine_init_s-2_seed-0"
    assert first.workload_params["models"] == ["llama-2-7b"]  # a list of lists passes one list through
    assert first.options == {"engine_init_s": 2.0}
    assert len({s.run_id for s in specs}) == len(specs)
    assert [s.point["system"] for s in specs[:16]] == ["dedicated"] * 16  # systems outermost
    plain = experiment.parse({"name": "x", "systems": [{"name": "dedicated", "options": {"extra_args": ["-a", "-b"]}}],
                              "workload": {"spec": "synthetic-week", "params": {"models": ["m1", "m2"]}}},
                             tmp_path / "x.toml")
    (only,) = experiment.grid(plain)  # list-valued by nature: one value, no sweep
    assert only.workload_params["models"] == ["m1", "m2"] and only.options["extra_args"] == ["-a", "-b"]


#: Simulated systems and experiment presets the README documents (more may be added).
DOCUMENTED_SYSTEMS = ("warmserve", "warmserve-no-kv-prewarm", "warmserve-no-placement", "warmserve-no-prewarm",
                      "serverlessllm", "muxserve", "vllm-ondemand", "dedicated", "ideal")
DOCUMENTED_PRESETS = ("default", "paper-headline", "paper-512gpu", "ablation", "nightly", "capacity-muxserve")


def test_the_documented_presets_ship() -> None:
    """The parametrized preset checks below loop over preset_names(): this keeps them from passing empty."""
    assert set(DOCUMENTED_PRESETS) <= set(experiment.preset_names())


def test_systems_all_system_options_and_labels(tmp_path) -> None:
    config = experiment.parse({"name": "x", "workload": {"spec": "synthetic-week"}}, tmp_path / "x.toml")
    # the README's systems, so the comparison below is not vacuous when discovery finds nothing
    assert set(DOCUMENTED_SYSTEMS) <= set(experiment.registered_systems())
    assert [s.system for s in experiment.grid(config)] == experiment.registered_systems()
    raw = {"name": "x", "workload": {"spec": "synthetic-week"}, "options": {"engine_init_s": 3.0},
           "systems": [{"name": "vllm-ondemand", "label": "slow-init", "options": {"engine_init_s": 6.0}},
                       "vllm-ondemand"]}
    specs = experiment.grid(experiment.parse(raw, tmp_path / "x.toml"))
    assert [(s.point["system"], s.options["engine_init_s"]) for s in specs] == [("slow-init", 6.0), ("vllm-ondemand", 3.0)]
    raw["systems"] = ["dedicated", "dedicated"]
    with pytest.raises(WarmbenchError, match="distinct `label`"):
        experiment.grid(experiment.parse(raw, tmp_path / "x.toml"))


def test_quick_applies_its_overrides(tmp_path) -> None:
    config, _ = experiment.load(write(tmp_path, TINY), quick=True)
    assert config.name == "tiny-quick"
    assert config.workload.params["total_rps"] == [2.0]
    assert len(experiment.grid(config)) == 2


def test_default_preset_validates_and_covers_every_system() -> None:
    config, path = experiment.load("default")
    specs = experiment.grid(config)
    assert path.name == "default.toml" and config.cluster == "paper-16gpu"
    assert {s.system for s in specs} == set(experiment.registered_systems())
    assert len({s.point.get("total_rps") for s in specs}) in (2, 3)
    assert config.models == ["llama-2-7b", "llama-2-7b#1", "llama-2-13b", "llama-2-70b"]
    for name in experiment.preset_names():
        experiment.grid(experiment.load(name)[0])


@pytest.fixture(autouse=True)
def fixed_revision(monkeypatch):
    """Others commit to this tree while tests run; resume must not see that as new code."""
    monkeypatch.setattr(runner, "current_code", lambda: {"revision": "r1", "dirty": False, "diff_sha256": None})


def test_run_writes_the_store_and_resumes(tmp_path, monkeypatch) -> None:
    config, path = experiment.load(write(tmp_path, TINY), quick=True)
    exp_dir, outcomes = runner.run(config, tmp_path / "results", jobs=1, source=path)
    assert [o.status for o in outcomes] == ["complete", "complete"]
    run = read_run(exp_dir / outcomes[0].spec.run_id)
    m = run.manifest
    assert m["status"] == "complete" and m["seed"] == 0 and m["point"]["system"] == "dedicated"
    assert m["config"]["workload_params"]["total_rps"] == 2.0 and m["config"]["cluster"] == "paper-16gpu"
    assert m["versions"]["pandas"] and m["git"]["revision"] == "r1" and m["host"]["hostname"]
    assert len(m["workload_sha256"]) == 64 and "trace_sha256" in m
    assert m["started_at"] <= m["ended_at"]
    assert len(run.requests) == m["workload_requests"] > 0
    assert set(run.requests["model"]) <= {"llama-2-7b", "llama-2-13b"}
    summary = json.loads((exp_dir / outcomes[0].spec.run_id / "summary.json").read_text())
    assert summary["models"]["all"]["requests"] == len(run.requests)
    assert json.loads((exp_dir / "experiment.json").read_text())["runs"] == [o.spec.run_id for o in outcomes]

    _, again = runner.run(config, tmp_path / "results", jobs=1)
    assert [o.status for o in again] == ["skipped", "skipped"]
    assert again[0].summary["p99_ttft_s"] == outcomes[0].summary["p99_ttft_s"]

    changed = experiment.parse({**__import__("tomllib").loads(TINY), "options": {"engine_init_s": 9.0}}, path, quick=True)
    _, rerun = runner.run(changed, tmp_path / "results", jobs=1)
    assert [o.status for o in rerun] == ["complete", "complete"]  # same run ids, new config: not skipped
    monkeypatch.setattr(runner, "current_code", lambda: {"revision": "r2", "dirty": False, "diff_sha256": None})
    _, new_code = runner.run(changed, tmp_path / "results", jobs=1)
    assert [o.status for o in new_code] == ["complete", "complete"]  # same config, new code: not skipped


def test_a_run_interrupted_midway_is_incomplete_and_rerun(tmp_path) -> None:
    config, _ = experiment.load(write(tmp_path, TINY), quick=True)
    spec = experiment.grid(config)[0]
    run_dir = tmp_path / "results" / config.name / spec.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"status": "incomplete", "config_sha256": spec.config_sha256()}))
    assert not runner.is_done(spec, run_dir)
    _, outcomes = runner.run(config, tmp_path / "results", jobs=1)
    assert outcomes[0].status == "complete"


def test_a_failing_run_is_recorded_and_the_grid_goes_on(tmp_path) -> None:
    text = TINY.replace('systems = ["dedicated", "vllm-ondemand"]',
                        'systems = ["dedicated", {name = "vllm-ondemand", options = {no_such_option = 1}}]')
    config, _ = experiment.load(write(tmp_path, text), quick=True)
    exp_dir, outcomes = runner.run(config, tmp_path / "results", jobs=1)
    assert [o.status for o in outcomes] == ["complete", "failed"]
    manifest = json.loads((exp_dir / outcomes[1].spec.run_id / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "no_such_option" in manifest["error"]
    assert outcomes[1].user_error


def test_run_command_prints_the_table_and_the_report_path(tmp_path) -> None:
    code, out, err = cli("run", str(write(tmp_path, TINY)), "--quick", "--results", str(tmp_path / "r"), "--jobs", "2")
    assert code == 0, err
    assert "TTFT p99" in out and "vllm-ondemand" in out
    assert (tmp_path / "r" / "tiny-quick" / "report.html").is_file()
    assert "report.html" in out
    bad = write(tmp_path, TINY.replace('systems = ["dedicated", "vllm-ondemand"]', 'systems = ["no-such-system"]'), "b.toml")
    code, _, err = cli("run", str(bad), "--results", str(tmp_path / "r"))
    assert code == 2 and "unknown system 'no-such-system'" in err


def test_live_backend_runs_through_the_real_load_generator(tmp_path) -> None:
    """A live experiment against a closed port: every request becomes a failed record, none is lost."""
    text = """
name = "live-smoke"
backend = "live"
models = ["llama-2-7b"]
systems = [{name = "openai", options = {url = "http://127.0.0.1:9", token_ids = false, metrics = false, timeout_s = 5}}]
[workload]
spec = "synthetic-week"
[workload.params]
total_rps = 2.0
duration_s = 5.0
history_days = 0
"""
    config, _ = experiment.load(write(tmp_path, text))
    exp_dir, (outcome,) = runner.run(config, tmp_path / "results", jobs=2)
    assert outcome.status == "complete", outcome.error
    run = read_run(exp_dir / outcome.spec.run_id)
    assert len(run.requests) == run.manifest["workload_requests"] > 0
    assert set(run.requests["status"]) <= {"error", "timeout"}
    assert outcome.summary["slo_attainment"] == 0.0 and outcome.summary["p99_ttft_s"] is None
    assert run.manifest["kind"] == "live" and run.manifest["backend"] == "live"


def test_baseline_must_name_a_system(tmp_path) -> None:
    path = write(tmp_path, 'baseline = "nobody"\n' + TINY)
    code, _, err = cli("run", str(path), "--results", str(tmp_path / "r"))
    assert code == 2 and "baseline 'nobody' is not one of the systems" in err
    code, _, err = cli("run", str(write(tmp_path, TINY, "ok.toml")), "--baseline", "nobody", "--results", str(tmp_path / "r"))
    assert code == 2 and "--baseline 'nobody'" in err


def test_trace_file_relative_to_the_experiment_is_filtered_to_its_models(tmp_path) -> None:
    (tmp_path / "traces").mkdir()
    rows = ["arrival_s,model,input_tokens,output_tokens"] + [
        f"{i * 0.5},{'llama-2-7b' if i % 3 else 'llama-2-13b'},100,20" for i in range(60)]
    (tmp_path / "traces" / "mine.csv").write_text("\n".join(rows) + "\n")
    text = """
name = "from-file"
models = ["llama-2-7b"]
systems = ["dedicated"]
[workload]
spec = "traces/mine.csv"
"""
    config, _ = experiment.load(write(tmp_path, text))
    assert config.workload.spec == str(tmp_path / "traces" / "mine.csv")
    exp_dir, (outcome,) = runner.run(config, tmp_path / "results", jobs=1)
    assert outcome.status == "complete", outcome.error
    run = read_run(exp_dir / outcome.spec.run_id)
    assert len(run.requests) == 40 and set(run.requests["model"]) == {"llama-2-7b"}
    assert len(run.manifest["trace_sha256"]) == 64  # the source file's hash
    assert run.manifest["workload"]["filtered_to_models"] == ["llama-2-7b"]


def test_seeds_draw_independent_preset_workloads_unless_pinned(tmp_path) -> None:
    text = TINY.replace("seeds = [0]", "seeds = [0, 1]").replace("total_rps = [2.0, 4.0]", "total_rps = 2.0")
    config, _ = experiment.load(write(tmp_path, text))
    specs = [s for s in experiment.grid(config) if s.system == "dedicated"]
    hashes = {identity.workload_sha256(runner.resolve_workload(s).requests) for s in specs}
    assert len(specs) == 2 and len(hashes) == 2
    pinned, _ = experiment.load(write(tmp_path, text.replace("history_days = 1", "history_days = 1\nseed = 7"),
                                      "pinned.toml"))
    specs = [s for s in experiment.grid(pinned) if s.system == "dedicated"]
    hashes = {identity.workload_sha256(runner.resolve_workload(s).requests) for s in specs}
    assert len(specs) == 2 and len(hashes) == 1


@pytest.mark.parametrize("preset", experiment.preset_names())
def test_every_shipped_preset_validates_and_names_registered_systems(preset: str) -> None:
    for quick in (False, True):
        config, _ = experiment.load(preset, quick=quick)
        specs = experiment.grid(config)
        assert specs and {s.system for s in specs} <= set(experiment.registered_systems())
