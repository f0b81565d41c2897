"""The results store: a run written and read back is the same RunResult."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.contracts.errors import WarmbenchError
from harness.store import environment, find_runs, read_run, read_summary, write_run
from tests.results.factory import requests, synthetic_result
from tests.results.test_metrics import TABLE


def assert_same(a, b) -> None:
    for name in ("requests", "events", "memory"):
        pd.testing.assert_frame_equal(getattr(a, name).reset_index(drop=True),
                                      getattr(b, name).reset_index(drop=True), check_dtype=False)
    assert a.manifest == b.manifest


def test_round_trip_gives_the_same_run_result(tmp_path) -> None:
    result = synthetic_result()
    result.manifest.update(environment())
    assert_same(read_run(write_run(result, tmp_path / "run")), result)


def test_round_trip_keeps_itl_lists_and_nan(tmp_path) -> None:
    result = synthetic_result()
    result.requests = requests(TABLE)
    back = read_run(write_run(result, tmp_path / "run"))
    assert back.requests["itl_s"].tolist() == [[0.05] * 4, [0.5, 0.5], [], None, [0.1]]
    assert back.requests["first_token_s"].isna().tolist() == [False, False, False, True, False]
    assert_same(back, result)


def test_summary_json_is_strict_and_uses_the_config_slo(tmp_path) -> None:
    result = synthetic_result()
    result.requests = requests(TABLE)
    result.manifest["config"]["slo"] = {"ttft_s": 10.0, "tpot_s": 1.0}
    run = write_run(result, tmp_path / "run")
    text = (run / "summary.json").read_text()
    assert "NaN" not in text
    summary = json.loads(text)
    assert summary["slo"] == {"ttft_s": 10.0, "tpot_s": 1.0}
    assert summary["models"]["all"]["slo_attainment"] == pytest.approx(0.6)
    assert summary["models"]["all"]["p99_itl_s"] is not None
    assert read_summary(run) == summary


def test_interrupted_live_run_is_read_from_jsonl_and_marked_incomplete(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "system": "x"}))
    rows = requests(TABLE[:2]).drop(columns=["itl_s"]).to_dict("records")
    (run / "requests.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"request_id": 9, "mo')
    back = read_run(run)
    assert len(back.requests) == 2
    assert back.manifest["status"] == "incomplete"
    assert read_summary(run)["models"]["all"]["requests"] == 2


def test_find_runs_and_errors(tmp_path) -> None:
    for name in ("b", "a"):
        write_run(synthetic_result(n=5), tmp_path / "exp" / name)
    assert [p.name for p in find_runs(tmp_path / "exp")] == ["a", "b"]
    assert find_runs(tmp_path / "exp" / "a") == [tmp_path / "exp" / "a"]
    with pytest.raises(WarmbenchError, match="holds no runs"):
        (tmp_path / "empty").mkdir()
        find_runs(tmp_path / "empty")
    with pytest.raises(WarmbenchError, match="does not exist"):
        find_runs(tmp_path / "nope")
    with pytest.raises(WarmbenchError, match="not a run directory"):
        read_run(tmp_path)


def test_environment_names_versions_git_and_host() -> None:
    env = environment()
    assert env["versions"]["pandas"] == pd.__version__
    assert set(env["host"]) >= {"hostname", "platform", "cpus"}
    assert "revision" in env["git"]


def test_real_simulator_run_round_trips(tmp_path) -> None:
    from systems.sim import simulate
    from workloads import resolve

    workload = resolve("synthetic-week", models=["llama-2-7b", "llama-2-13b"], total_rps=2.0, duration_s=60.0,
                       history_days=1)
    result = simulate(workload, "paper-16gpu", "vllm-ondemand", seed=1)
    result.manifest["status"] = "complete"  # the writer requires a status
    assert len(result.events) and len(result.memory)
    assert_same(read_run(write_run(result, tmp_path / "run")), result)
