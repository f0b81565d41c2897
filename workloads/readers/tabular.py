"""Canonical workload files (what `trace make` writes) and any CSV / Parquet with a user column mapping."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.contracts.errors import InputError, WarmbenchError
from workloads.readers.common import (
    check_file,
    finish,
    read_csv,
    relative_seconds,
    require_columns,
    seconds_column,
    timestamp_column,
    token_column,
)
from workloads.workload import Workload

CANONICAL = ["arrival_s", "model", "input_tokens", "output_tokens"]
TIME_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def read_table(path: Path) -> pa.Table:
    """A CSV or Parquet file as an Arrow table (Parquet by suffix or magic bytes)."""
    if is_parquet(path):
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:  # ArrowInvalid, truncated or corrupt files
            raise InputError(f"cannot read as Parquet: {str(exc).splitlines()[0]}", file=str(path)) from None
        if table.num_rows == 0:
            raise InputError("no rows", file=str(path))
        return table
    return read_csv(path)


def is_parquet(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def read_mapped(path: str | Path, *, columns: Mapping[str, str] | None = None, time_unit: str = "s",
                model: str | None = None, fmt: str = "table", origin_s: float | None = None) -> Workload:
    """Read a table whose columns map to the canonical ones.

    `columns`: canonical name -> column in the file (unmapped names are looked up as-is).
    `time_unit`: s / ms / us / ns for numeric times, or `timestamp` for date-time strings.
    `model`: used when the file has no model column.
    """
    p = check_file(path)
    mapping = {c: c for c in CANONICAL}
    for key, value in (columns or {}).items():
        if key not in CANONICAL:
            raise WarmbenchError(f"unknown canonical column {key!r} in the column mapping; "
                                 f"expected some of {CANONICAL}")
        mapping[key] = value
    if time_unit != "timestamp" and time_unit not in TIME_UNITS:
        raise WarmbenchError(f"time_unit must be one of {sorted(TIME_UNITS) + ['timestamp']}, got {time_unit!r}")
    table = read_table(p)
    names = table.column_names
    needed = [mapping[c] for c in ("arrival_s", "input_tokens", "output_tokens")]
    if model is None:
        needed.append(mapping["model"])
    require_columns(names, needed, p)
    time_col = table.column(mapping["arrival_s"])
    extra = None
    if time_unit == "timestamp" or pa.types.is_timestamp(time_col.type):
        clock_s, extra = relative_seconds(timestamp_column(time_col, mapping["arrival_s"], p))
        origin_s = 0.0
    else:
        clock_s = seconds_column(time_col, mapping["arrival_s"], p) * TIME_UNITS[time_unit]
        if origin_s is not None and len(clock_s) and clock_s.min() < origin_s:  # canonical times start at 0
            i = int(np.flatnonzero(clock_s < origin_s)[0])
            raise InputError(f"negative arrival time {clock_s[i]:g}", file=str(p), row=i + 1,
                             field=mapping["arrival_s"])
    inputs = token_column(table.column(mapping["input_tokens"]), mapping["input_tokens"], p)
    outputs = token_column(table.column(mapping["output_tokens"]), mapping["output_tokens"], p)
    if mapping["model"] in names and model is None:
        models = table.column(mapping["model"]).to_pandas()
        bad = models.isna().to_numpy() | (models.astype(str).str.len() == 0).to_numpy()
        if bad.any():
            raise InputError("missing model name", file=str(p), row=int(np.flatnonzero(bad)[0]) + 1,
                             field=mapping["model"])
        model_values: np.ndarray | str = models.astype(str).to_numpy(dtype=object)
    else:
        model_values = model if model is not None else "llama-2-7b"
    return finish(p, fmt, clock_s, model_values, inputs, outputs, rows_read=table.num_rows, dropped={},
                  params={"columns": dict(mapping), "time_unit": time_unit, "model": model}, origin_s=origin_s,
                  extra=extra)


def read_canonical(path: str | Path) -> Workload:
    """A canonical file: `arrival_s` seconds, `model`, token counts (`request_id` optional, renumbered).

    A Parquet file written by `trace make` brings back its meta (under `made_by`) and its
    history (`NAME.history.parquet` beside it).
    """
    from workloads.io import history_path, stored_meta
    workload = read_mapped(path, fmt="canonical", origin_s=0.0)
    p = Path(path)
    if not is_parquet(p):
        return workload
    try:
        made_by = stored_meta(p)
    except (OSError, ValueError) as exc:  # metadata that is not our JSON
        raise InputError(f"cannot read the workload meta: {str(exc).splitlines()[0]}", file=str(p)) from None
    meta = dict(workload.meta)
    history = None
    if made_by is not None:
        meta["made_by"] = made_by
        if "window_s" in made_by:
            meta["window_s"] = made_by["window_s"]
    if history_path(p).is_file():
        try:
            history = pq.read_table(history_path(p)).to_pandas()
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read as Parquet: {str(exc).splitlines()[0]}",
                             file=str(history_path(p))) from None
        history["model"] = history["model"].astype(object)
    return Workload(workload.requests, meta, history)


def is_canonical(header: list[str]) -> bool:
    return all(c in header for c in CANONICAL)
