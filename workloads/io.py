"""Canonical workload files: requests in Parquet (meta in the schema metadata), history beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from workloads.workload import Workload

META_KEY = b"warmbench.workload.meta"


def history_path(path: Path) -> Path:
    """`trace.parquet` -> `trace.history.parquet`."""
    return path.with_name(path.stem + ".history.parquet")


def write_workload(workload: Workload, path: str | Path) -> list[Path]:
    """Write the requests (and the history, if any); returns the files written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(workload.requests.astype({"model": object}), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           META_KEY: json.dumps(workload.meta, default=str).encode()})
    pq.write_table(table, p)
    written = [p]
    if workload.history is not None:
        pq.write_table(pa.Table.from_pandas(workload.history.astype({"model": object}), preserve_index=False),
                       history_path(p))
        written.append(history_path(p))
    return written


def stored_meta(path: Path) -> dict[str, Any] | None:
    """The meta a previous `write_workload` stored in a Parquet file, if any."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata[META_KEY]) if META_KEY in metadata else None
