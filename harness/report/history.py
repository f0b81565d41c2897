"""History across revisions: each metric per revision of the code, and the revisions where it stepped.

Reads every run at or below the given results folders, the current ones (`<exp>/<run-id>/`) and
those the store archived when the code changed (`<exp>/.history/<code-key>/<run-id>/`), through the
report's run loader (every file checked; bad input is an InputError naming the file). A run counts
only when it is complete and its manifest records the code that made it (`code`, schema_version 2);
others are skipped with a note, and when none is left that is bad input.

A row is a revision: the runs with one code identity (`identity.code_key`: commit, plus the hash of
uncommitted changes when the tree was dirty), ordered by the earliest `started_at` of its runs. The
same code run with another config is a row of its own (`config 2`), never averaged with the first.
A series is one experiment, system, sweep point (seed aside) and metric; its value at a revision is
the mean over seeds (repeats of one seed averaged first) with the 95% t interval over seeds
(`metrics.mean_ci`, the report's interval; none with one seed).

Change points: `harness.report.changepoints` (METHOD there).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness.contracts.errors import InputError, WarmbenchError
from harness.contracts.files import strict
from harness.identity import code_key
from harness.metrics import ALL_MODELS, mean_ci
from harness.report.changepoints import METHOD, Cell, ChangePoint, Series, detect
from harness.report.load import RunInfo, load_runs, point_label
from harness.store import HISTORY_DIR, find_runs

#: Metrics shown when none is asked for: the nightly gate's latency, decode speed and SLO view.
DEFAULT_METRICS: tuple[str, ...] = ("p99_ttft_s", "p50_ttft_s", "mean_tpot_s", "slo_attainment")
#: Smallest relative step reported (5%: the smallest change issue 15 asks the nightly gate to catch).
DEFAULT_MIN_EFFECT = 0.05


@dataclass
class Revision:
    """One row: the runs made by one code identity (and one config of it)."""

    key: str  # code_key, plus `#N` for the N-th config the same code ran with
    revision: str | None
    dirty: bool | None
    diff_sha256: str | None
    first_started: str
    last_started: str
    runs: int = 0
    folders: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """`<commit12>`, `<commit12>+<diff12> (dirty)`, with ` (config N)` for a config rerun."""
        base, _, variant = self.key.partition("#")
        text = base + (" (dirty)" if self.dirty else "") + (" (no git)" if self.revision is None else "")
        return text + (f" (config {variant})" if variant else "")

    @property
    def date(self) -> str:
        first, last = self.first_started[:10], self.last_started[:10]
        return first if first == last else f"{first}..{last}"


@dataclass
class History:
    inputs: list[str]
    model: str
    metrics: list[str]
    min_effect: float
    revisions: list[Revision]
    series: list[Series]
    notes: list[str]

    @property
    def change_points(self) -> list[ChangePoint]:
        return [c for s in self.series for c in s.change_points]

    @property
    def several_experiments(self) -> bool:
        return len({s.experiment for s in self.series}) > 1

    def as_dict(self) -> dict[str, Any]:
        """Strict JSON (unavailable = null): inputs, revisions in order, series with their cells, change points."""
        series = [{"experiment": s.experiment, "system": s.system, "point": s.point, "metric": s.metric,
                   "values": [{"revision": k, "mean": c.mean, "ci95": list(c.ci) if c.ci else None,
                               "seeds": len(c.seeds)} for k, c in s.cells.items()],
                   "unconfirmed": s.unconfirmed} for s in self.series]
        return strict({"inputs": self.inputs, "model": self.model, "metrics": self.metrics,
                       "min_effect": self.min_effect, "method": METHOD,
                       "revisions": [{**asdict(r), "label": r.label} for r in self.revisions],
                       "series": series, "change_points": [{**asdict(c), "size": c.size} for c in self.change_points],
                       "notes": self.notes})


def run_dirs(paths: list[Path]) -> list[Path]:
    """Every run at or below `paths`: current runs and those archived in `.history/`; other dot folders are skipped."""
    return list(dict.fromkeys(run.resolve() for root in paths for run in find_runs(root, archived=True)))


def collect(paths: list[Path], metrics: list[str] | None = None, systems: list[str] | None = None,
            model: str = ALL_MODELS, min_effect: float = DEFAULT_MIN_EFFECT, last: int | None = None) -> History:
    """The history of `metrics` under `paths` (see the module docstring), over the `last` revisions
    when given (change points are then looked for among those only). WarmbenchError when nothing is usable."""
    dirs = run_dirs(paths)
    where = ", ".join(map(str, paths))
    if not dirs:
        raise WarmbenchError(f"{where} holds no runs (no */manifest.json below it)")
    notes: list[str] = []
    infos, no_code, not_complete, no_date = [], [], 0, 0
    for path in dirs:
        for info in load_runs(path):
            code = info.manifest.get("code")
            if not isinstance(code, dict) or code_key(code) == "unknown":
                no_code.append(info)
            elif not info.complete:
                not_complete += 1
            elif not _started(info):
                no_date += 1
            else:
                infos.append(info)
    if not infos:
        if no_code:
            raise WarmbenchError(
                f"{where}: none of its {len(no_code)} run(s) records the code that made it (manifest.json `code`, "
                "schema_version 2); history needs results written by this warmbench: rerun the experiment")
        raise WarmbenchError(f"{where}: no complete run with a code revision and a start time to show")
    if no_code:
        notes.append(f"skipped {len(no_code)} run(s) whose manifest does not record the code revision "
                     "(written before schema_version 2): rerun them to add them to the history")
    if not_complete:
        notes.append(f"skipped {not_complete} failed or incomplete run(s)")
    if no_date:
        notes.append(f"skipped {no_date} run(s) without a valid started_at")
    infos = _dedupe(infos)
    revisions, row_of = _revisions(infos, notes)
    if last is not None and len(revisions) > last:
        notes.append(f"showing the last {last} of {len(revisions)} revisions")
        revisions = revisions[-last:]
    keys = _series_keys(infos)
    known = sorted({m for i in infos for summary in i.summary.values() for m in summary})
    chosen = list(metrics or DEFAULT_METRICS)
    for metric in chosen:
        if metric not in known:
            raise WarmbenchError(f"--metric {metric!r}: no run has it; metrics: {', '.join(known)}")
    names = list(dict.fromkeys(i.system for i in infos))
    for system in systems or []:
        if system not in names:
            raise WarmbenchError(f"--system {system!r}: no run of it; systems: {', '.join(names)}")
    models = sorted({m for i in infos for m in i.summary})
    if model not in models:
        raise WarmbenchError(f"--model {model!r}: no run has it; models: {', '.join(models)}")
    order = [r.key for r in revisions]
    series = []
    for (experiment, system, point), runs in keys.items():  # _cells keeps the revisions in `order` only
        if systems and system not in systems:
            continue
        for metric in chosen:
            cells = _cells(runs, row_of, metric, model, order)
            if not cells:
                continue
            found = Series(experiment, system, point, metric, cells)
            detect(found, min_effect)
            series.append(found)
    return History([str(p) for p in paths], model, chosen, min_effect, revisions, series, notes)


def _started(info: RunInfo) -> datetime | None:
    """The run's start in UTC (a time without an offset is taken as UTC); None when not recorded."""
    text = info.manifest.get("started_at")
    if not text:
        return None
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        raise InputError(f"not an ISO date: {text!r}", file=str(info.path / "manifest.json"), field="started_at") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def _start(info: RunInfo) -> datetime:
    """`_started` of a run already known to have one."""
    when = _started(info)
    assert when is not None
    return when


def _dedupe(infos: list[RunInfo]) -> list[RunInfo]:
    """One run copied into two folders (CI artefacts downloaded twice) counts once."""
    seen: dict[tuple, RunInfo] = {}
    for info in infos:
        run_id = info.manifest.get("run_id") or info.run_id  # an archived folder may carry a -N suffix
        key = (_experiment(info), str(run_id), code_key(info.manifest["code"]), info.manifest.get("started_at"),
               info.manifest.get("config_sha256"))
        seen.setdefault(key, info)
    return list(seen.values())


def _experiment(info: RunInfo) -> str:
    name = info.manifest.get("experiment")
    if isinstance(name, str) and name:
        return name
    parts = info.path.parts
    return parts[parts.index(HISTORY_DIR) - 1] if HISTORY_DIR in parts else info.path.parent.name


def _series_of(info: RunInfo) -> tuple[str, str, str]:
    point = {k: v for k, v in info.point.items() if k != "seed"}
    return _experiment(info), info.system, point_label(point)


def _seed(info: RunInfo) -> str:
    return json.dumps(info.point.get("seed", info.manifest.get("seed")), default=str)


def _revisions(infos: list[RunInfo], notes: list[str]) -> tuple[list[Revision], dict[Path, str]]:
    """Rows in date order and each run's row key. The same code with another config (a series and
    seed with two config hashes) becomes `<code-key>#2`, ...: two configs are never averaged."""
    slot_of = {info.path: (code_key(info.manifest["code"]), *_series_of(info), _seed(info)) for info in infos}
    configs: dict[tuple, list[str]] = {}
    for info in sorted(infos, key=_start):
        listed = configs.setdefault(slot_of[info.path], [])
        config = str(info.manifest.get("config_sha256"))
        if config not in listed:
            listed.append(config)
    rows: dict[str, Revision] = {}
    row_of: dict[Path, str] = {}
    for info in infos:
        code = info.manifest["code"]
        ck = slot_of[info.path][0]
        variant = configs[slot_of[info.path]].index(str(info.manifest.get("config_sha256")))
        key = ck if variant == 0 else f"{ck}#{variant + 1}"
        started = _start(info).isoformat()
        row = rows.setdefault(key, Revision(key, code.get("revision"), code.get("dirty"), code.get("diff_sha256"),
                                            started, started))
        row.first_started, row.last_started = min(row.first_started, started), max(row.last_started, started)
        row.runs += 1
        folder = str(info.path.parent)
        if folder not in row.folders:
            row.folders.append(folder)
        row_of[info.path] = key
    for key in rows:
        if "#" in key:
            notes.append(f"revision {key.split('#')[0]} ran with more than one config: shown as separate rows")
    notes[:] = list(dict.fromkeys(notes))
    return sorted(rows.values(), key=lambda r: (r.first_started, r.last_started, r.key)), row_of


def _series_keys(infos: list[RunInfo]) -> dict[tuple[str, str, str], list[RunInfo]]:
    out: dict[tuple[str, str, str], list[RunInfo]] = {}
    for info in infos:
        out.setdefault(_series_of(info), []).append(info)
    return out


def _cells(runs: list[RunInfo], row_of: dict[Path, str], metric: str, model: str, order: list[str]) -> dict[str, Cell]:
    """Revision key -> Cell, in revision order; repeats of one seed at one revision are averaged first."""
    per_seed: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        value = run.summary.get(model, {}).get(metric, math.nan)
        if value is None or not math.isfinite(value):
            continue
        per_seed.setdefault(row_of[run.path], {}).setdefault(_seed(run), []).append(float(value))
    cells = {}
    for key in order:
        if key in per_seed:
            seeds = {s: float(np.mean(v)) for s, v in per_seed[key].items()}
            values = list(seeds.values())
            cells[key] = Cell(float(np.mean(values)), mean_ci(values), seeds)
    return cells
