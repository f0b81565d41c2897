"""Load runs (one run, an experiment, or a results folder) into tidy frames for the report layer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.metrics import from_jsonable
from harness.result import RunResult
from harness.store import find_runs, read_run, read_summary

#: File an experiment run writes beside its runs: config, grid order, run ids.
EXPERIMENT_FILE = "experiment.json"


@dataclass
class RunInfo:
    """One run as the report sees it: where, which system, which sweep point, its metrics."""

    path: Path
    run_id: str
    system: str
    point: dict[str, Any]
    manifest: dict[str, Any]
    summary: dict[str, dict[str, float]]

    label: str = ""  # the sweep point without system, seed and keys every run shares (seeds are averaged)

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    def result(self) -> RunResult:
        return read_run(self.path)


def point_label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def load_runs(path: str | Path) -> list[RunInfo]:
    """Runs at or below `path`, in the experiment's grid order when it recorded one."""
    runs = find_runs(path)
    order = _grid_order(Path(path))
    if order:
        by_id = {r.name: r for r in runs}
        runs = [by_id[i] for i in order if i in by_id] or runs
    infos = [_info(r) for r in runs]
    keys = list(dict.fromkeys(k for i in infos for k in i.point))
    varying = [k for k in keys if k != "seed" and len({json.dumps(i.point.get(k), default=str) for i in infos}) > 1]
    for info in infos:
        info.label = point_label({k: info.point.get(k) for k in varying})
    return infos


def _grid_order(path: Path) -> list[str]:
    file = path / EXPERIMENT_FILE
    if not file.is_file():
        return []
    return [str(r) for r in json.loads(file.read_text()).get("runs", [])]


def _info(run: Path) -> RunInfo:
    manifest = json.loads((run / "manifest.json").read_text())
    if not (run / "requests.parquet").exists() and manifest.get("status") == "complete":
        manifest["status"] = "incomplete"
    point = dict(manifest.get("point") or {})
    system = str(point.pop("system", None) or manifest.get("system") or run.name)
    summary = from_jsonable(read_summary(run)["models"])
    return RunInfo(path=run, run_id=run.name, system=system, point=point, manifest=manifest, summary=summary)


def summary_frame(runs: list[RunInfo]) -> pd.DataFrame:
    """One row per run x model (model "all" first): run_id, system, point, each swept key, metrics."""
    rows = []
    for run in runs:
        for model, metrics in run.summary.items():
            rows.append({"run_id": run.run_id, "system": run.system, "point": run.label, **run.point,
                         "model": model, **metrics})
    return pd.DataFrame(rows)


def points(runs: list[RunInfo]) -> list[str]:
    """Distinct sweep-point labels in grid order."""
    return list(dict.fromkeys(r.label for r in runs))


def systems(runs: list[RunInfo]) -> list[str]:
    return list(dict.fromkeys(r.system for r in runs))


def check_system(runs: list[RunInfo], name: str | None) -> str | None:
    """`name` if some run is of that system (None passes); a user error otherwise."""
    from harness.errors import WarmbenchError

    if name is not None and name not in systems(runs):
        raise WarmbenchError(f"no runs of system {name!r}; systems: {', '.join(systems(runs))}")
    return name
