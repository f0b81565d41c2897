"""Results store: a run is a directory of plain files, readable after a crash.

Layout: `manifest.json`, `requests.parquet`, `events.parquet`, `memory.parquet`, `summary.json`.
A live run appends `requests.jsonl` while it runs (flushed at least every second) and turns it
into Parquet at the end; `read_run` falls back to the JSONL of an interrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import WarmbenchError
from harness.result import EVENT_COLUMNS, MEMORY_COLUMNS, REQUEST_COLUMNS, RunResult, empty_table

TABLES: dict[str, tuple[str, ...]] = {
    "requests": REQUEST_COLUMNS,
    "events": EVENT_COLUMNS,
    "memory": MEMORY_COLUMNS,
}


def write_run(result: RunResult, out_dir: str | Path) -> Path:
    """Write every table and the manifest; returns the run directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        getattr(result, name).to_parquet(out / f"{name}.parquet", index=False)
    write_json(out / "manifest.json", result.manifest)
    return out


def read_run(run_dir: str | Path) -> RunResult:
    """Load a run back; an interrupted live run is read from its JSONL."""
    run = Path(run_dir)
    manifest_path = run / "manifest.json"
    if not manifest_path.exists():
        raise WarmbenchError(f"{run} is not a run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    tables: dict[str, pd.DataFrame] = {}
    for name, columns in TABLES.items():
        parquet, jsonl = run / f"{name}.parquet", run / f"{name}.jsonl"
        if parquet.exists():
            tables[name] = pd.read_parquet(parquet)
        elif jsonl.exists():
            tables[name] = read_jsonl(jsonl, columns)
        else:
            tables[name] = empty_table(columns)
    return RunResult(manifest=manifest, **tables)


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


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a manifest."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str, sort_keys=True))
    tmp.replace(path)
