"""Load runs (one run, an experiment, or a results folder) into tidy frames for the report layer.

Every file read here is checked before it is used: a manifest.json, summary.json, experiment.json
or table that cannot be read, is not JSON / Parquet, or holds the wrong types raises InputError
naming the file (the CLI exits 2), never a traceback and never exit 1 (which means "regression").
Older manifests, without `schema_version`, `mostly_failed` or `requests_summary`, are read too:
what they lack is computed from the summary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from pyarrow import ArrowException

from harness.contracts.errors import InputError, WarmbenchError
from harness.contracts.result import RunResult
from harness.metrics import ALL_MODELS, from_jsonable
from harness.store import (
    COMPLETE,
    EXPERIMENT_FILE,
    FAILED,
    INCOMPLETE,
    SCHEMA_VERSION,
    TABLES,
    find_runs,
    read_run,
    summary_of,
)

#: Manifest keys the report reads, with the JSON types they may hold (null always allowed).
_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "point": (dict,), "system": (str,), "config": (dict,), "warnings": (list,),
    "mostly_failed": (bool,), "requests_summary": (dict,), "schema_version": (int,),
    "workload_sha256": (str,), "workload": (dict,),
}
_NUMBER = (int, float)
#: Per table: the columns a report needs (when the table has rows), and those that must hold numbers (NaN allowed).
_TABLE_NEEDS: dict[str, tuple[str, ...]] = {"requests": ("model", "scheduled_s", "first_token_s", "end_s", "status"),
                                            "events": ("time_s", "kind"),
                                            "memory": ("time_s", "node", "gpu", "category", "bytes")}
_TABLE_NUMERIC: dict[str, tuple[str, ...]] = {
    "requests": ("scheduled_s", "sent_s", "first_token_s", "end_s", "input_tokens", "output_tokens",
                 "received_tokens", "queue_s", "load_s", "prefill_s"),
    "events": ("time_s",), "memory": ("time_s", "bytes"),
}


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
    def state(self) -> str:
        """complete | incomplete | failed (store's statuses); any other recorded status (e.g.
        `running` after a crash) counts as incomplete."""
        status = self.manifest.get("status")
        return status if status in (COMPLETE, FAILED) else INCOMPLETE

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    @property
    def request_counts(self) -> tuple[float, float] | None:
        """(requests, ok): the worst of the manifest's `requests_summary` and the summary; None if neither says."""
        sources = []
        counts = self.manifest.get("requests_summary") or {}
        overall = self.summary.get(ALL_MODELS, {})
        for total, ok in ((counts.get("total"), counts.get("ok")), (overall.get("requests"), overall.get("ok"))):
            if total is not None and ok is not None and not math.isnan(total) and not math.isnan(ok):
                sources.append((float(total), float(ok)))
        return max(sources, key=lambda c: (c[0] == 0, (c[0] - c[1]) / c[0] if c[0] else 1.0), default=None)

    @property
    def mostly_failed(self) -> bool:
        """More than half the requests not ok, or none: by the manifest's `mostly_failed` or by its counts.

        Older manifests lack the flag: the counts decide. A run whose counts are recorded nowhere
        and that does not say it is fine counts as mostly failed: nothing vouches for it.
        """
        flag = self.manifest.get("mostly_failed")
        counts = self.request_counts
        if counts is None:
            return flag is not False
        return flag is True or counts[0] == 0 or counts[0] - counts[1] > counts[0] / 2

    def result(self) -> RunResult:
        return read_result(self.path)


def point_label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def load_runs(path: str | Path) -> list[RunInfo]:
    """Runs at or below `path`, in the experiment's grid order when it recorded one."""
    runs = find_runs(path)
    order = grid_run_ids(Path(path))
    if order:
        by_id = {r.name: r for r in runs}
        runs = [by_id[i] for i in order if i in by_id] or runs
    infos = [_info(r) for r in runs]
    keys = list(dict.fromkeys(k for i in infos for k in i.point))
    varying = [k for k in keys if k != "seed" and len({json.dumps(i.point.get(k), default=str) for i in infos}) > 1]
    for info in infos:
        info.label = point_label({k: info.point.get(k) for k in varying})
    return infos


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; InputError naming the file when it is unreadable, not JSON or not an object."""
    if not path.is_file():  # a folder, a FIFO (a read would block forever), a device
        raise InputError("not a regular file", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror or _one_line(exc)})", file=str(path)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", file=str(path)) from None
    except RecursionError:
        raise InputError("not valid JSON (nested too deeply)", file=str(path)) from None
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, found {_json_type(data)}", file=str(path))
    return data


def read_experiment(path: Path) -> dict[str, Any] | None:
    """experiment.json of an experiment directory (None when `path` is not one), its types checked."""
    file = path / EXPERIMENT_FILE
    if not file.exists():
        return None
    data = read_json_object(file)
    runs, config = data.get("runs", []), data.get("config", {})
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        raise InputError("expected a list of run ids", file=str(file), field="runs")
    if not isinstance(config, dict):
        raise InputError(f"expected an object, found {_json_type(config)}", file=str(file), field="config")
    if config.get("baseline") is not None and not isinstance(config["baseline"], str):
        raise InputError("expected a system name", file=str(file), field="config.baseline")
    return data


def grid_run_ids(path: Path) -> list[str]:
    """The run ids the experiment's grid holds (empty when `path` is not an experiment)."""
    return list((read_experiment(path) or {}).get("runs", []))


def missing_runs(path: str | Path, runs: list[RunInfo]) -> list[str]:
    """Run ids in the experiment's grid (experiment.json) with no run among `runs`."""
    present = {r.run_id for r in runs}
    return [i for i in grid_run_ids(Path(path)) if i not in present]


def gaps(path: str | Path, runs: list[RunInfo]) -> list[str]:
    """One line per run of the grid that is not whole: missing on disk, failed or incomplete.

    What a table of means over seeds must say next to it, so that a missing run is never silent.
    """
    out = [f"{i}: missing (in {EXPERIMENT_FILE}, no run on disk)" for i in missing_runs(path, runs)]
    for run in runs:
        if run.state == FAILED:
            out.append(f"{run.run_id}: failed ({run.manifest.get('error') or 'no error recorded'})")
        elif run.state == INCOMPLETE:
            out.append(f"{run.run_id}: incomplete (status {run.manifest.get('status', 'not recorded')})")
    return out


def read_result(run: Path) -> RunResult:
    """The run's tables, with the columns the report uses checked (InputError naming the table's file)."""
    for name in TABLES:
        _check_table_file(run, name)
    try:
        result = read_run(run)
    except WarmbenchError:
        raise
    except (OSError, ValueError, TypeError, ArrowException) as exc:
        raise InputError(f"cannot read the run's tables: {_one_line(exc)}", file=str(run)) from None
    for name, needed in _TABLE_NEEDS.items():
        table, file = getattr(result, name), _table_file(run, name)
        lacking = [c for c in needed if c not in table.columns]
        if len(table) and lacking:
            raise InputError(f"the {name} table lacks column(s) {', '.join(lacking)}", file=file)
        for col in _TABLE_NUMERIC[name]:
            if col in table.columns and not pd.api.types.is_numeric_dtype(table[col]):
                try:
                    table[col] = pd.to_numeric(table[col], errors="raise").astype(float)
                except (TypeError, ValueError):
                    raise InputError("expected numbers", file=file, field=col) from None
    return result


def _check_table_file(run: Path, name: str) -> pq.FileMetaData | None:
    """A table file that is not Parquet (or not UTF-8 JSONL), or cannot be read: InputError naming it.
    Returns the Parquet footer (None for JSONL or no file)."""
    parquet, jsonl = run / f"{name}.parquet", run / f"{name}.jsonl"
    for file in (parquet, jsonl):
        if file.exists() and not file.is_file():
            raise InputError("not a regular file", file=str(file))
    try:
        if parquet.exists():
            return pq.read_metadata(parquet)
        if jsonl.exists():
            with jsonl.open(encoding="utf-8") as fh:
                for _ in fh:
                    pass
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=str(jsonl)) from None
    except (ValueError, ArrowException) as exc:  # before OSError: Arrow's IO errors are both
        raise InputError(f"not a Parquet file ({_one_line(exc)})", file=str(parquet)) from None
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror or _one_line(exc)})", file=_table_file(run, name)) from None
    return None


def _table_file(run: Path, name: str) -> str:
    parquet = run / f"{name}.parquet"
    return str(parquet if parquet.exists() else run / f"{name}.jsonl")


def _info(run: Path) -> RunInfo:
    file = run / "manifest.json"
    manifest = read_json_object(file)
    for key, types in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if value is not None and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
            names = " or ".join(_json_type(t()) for t in types)
            raise InputError(f"expected {names}, found {_json_type(value)}", file=str(file), field=key)
    for key, value in (manifest.get("requests_summary") or {}).items():
        if value is not None and (not isinstance(value, _NUMBER) or isinstance(value, bool)):
            raise InputError(f"expected a number, found {_json_type(value)}", file=str(file),
                             field=f"requests_summary.{key}")
    sha = (manifest.get("workload") or {}).get("sha256")
    if sha is not None and not isinstance(sha, str):
        raise InputError(f"expected a string, found {_json_type(sha)}", file=str(file), field="workload.sha256")
    version = manifest.get("schema_version")
    if version is not None and version > SCHEMA_VERSION:
        raise InputError(f"schema_version {version} is newer than this warmbench reads ({SCHEMA_VERSION}); "
                         "update warmbench", file=str(file), field="schema_version")
    if not (run / "requests.parquet").exists() and manifest.get("status") == COMPLETE:
        manifest["status"] = INCOMPLETE
    point = dict(manifest.get("point") or {})
    system = str(point.pop("system", None) or manifest.get("system") or run.name)
    summary = _summary(run)
    _check_request_rows(run, summary)
    return RunInfo(path=run, run_id=run.name, system=system, point=point, manifest=manifest, summary=summary)


def _check_request_rows(run: Path, summary: dict[str, dict[str, float]]) -> None:
    """requests.parquet must be Parquet and hold as many rows as summary.json counts: a table
    that was truncated or swapped after the run would otherwise pass behind an intact summary."""
    parquet = run / "requests.parquet"
    if not parquet.exists():
        return
    meta = _check_table_file(run, "requests")  # the footer, read once
    if meta is None:  # removed since the check above
        return
    total = summary.get(ALL_MODELS, {}).get("requests")
    rows = meta.num_rows
    lacking = [c for c in _TABLE_NEEDS["requests"] if c not in meta.schema.names]
    if rows and lacking:
        raise InputError(f"the requests table lacks column(s) {', '.join(lacking)}", file=str(parquet))
    if isinstance(total, (int, float)) and not isinstance(total, bool) and math.isfinite(total) and rows != total:
        raise InputError(f"holds {rows} requests but summary.json counts {total:g}",
                         file=str(parquet))


def _summary(run: Path) -> dict[str, dict[str, float]]:
    """summary.json's per-model metrics, checked; computed from the tables when the file is missing."""
    file = run / "summary.json"
    if not file.exists():
        try:
            return from_jsonable(summary_of(read_result(run))["models"])
        except (TypeError, ValueError, KeyError) as exc:  # e.g. an SLO in the manifest that is not a number
            raise InputError(f"cannot compute the run's metrics: {_one_line(exc)}", file=str(run / "manifest.json")) from None
    models = read_json_object(file).get("models")
    if not isinstance(models, dict):
        raise InputError(f"expected an object of models, found {_json_type(models)}", file=str(file), field="models")
    for model, metrics in models.items():
        if not isinstance(metrics, dict):
            raise InputError(f"expected an object of metrics, found {_json_type(metrics)}", file=str(file),
                             field=f"models.{model}")
        for metric, value in metrics.items():
            if value is not None and (not isinstance(value, _NUMBER) or isinstance(value, bool)):
                raise InputError(f"expected a number or null, found {_json_type(value)}", file=str(file),
                                 field=f"models.{model}.{metric}")
    return from_jsonable(models)


def _one_line(exc: BaseException) -> str:
    """A library's message on one line (pyarrow's span several)."""
    return " ".join(str(exc).split())


def _json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number" if not isinstance(value, int) else "an integer"
    names: dict[type, str] = {str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


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
    if name is not None and name not in systems(runs):
        raise WarmbenchError(f"no runs of system {name!r}; systems: {', '.join(systems(runs))}")
    return name
