"""`bench reader`: rows per second of the Azure LLM reader on a generated file in the 2024 format.

The file (5 M rows, or 200 k with --quick) is generated once under /tmp and reused; its
timestamps mix 6 and 7 fractional digits, `+00:00` offsets and rows without a fraction,
as the real 2024 trace does. Timed: `read_azure_llm` end to end (parse, validate, sort,
sha256), best of a few runs.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console
from rich.table import Table

FULL_ROWS = 5_000_000
QUICK_ROWS = 200_000


def generated_file(rows: int, seed: int = 0) -> Path:
    """A 2024-format Azure LLM CSV of `rows` rows under the temp dir (written once, then reused)."""
    path = Path(tempfile.gettempdir()) / f"warmbench-azure2024-v2-{rows}.csv"
    if path.exists() and path.stat().st_size > 0:
        return path
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-05-10T00:00:00", "ns")
    gaps_ns = rng.exponential(1e9 * 7 * 86400 / rows, rows).astype(np.int64)
    stamps = start + np.cumsum(gaps_ns).astype("timedelta64[ns]")
    kind = rng.integers(0, 10, rows)
    # A tenth of the rows fall on whole seconds and are written without a fraction (the file stays sorted).
    stamps = np.where(kind == 0, stamps.astype("datetime64[s]").astype("datetime64[ns]"), stamps)
    stamps = np.sort(stamps)
    whole_second = (stamps.astype(np.int64) % 1_000_000_000) == 0
    text = np.datetime_as_string(stamps, unit="us").astype(object)
    seven = np.datetime_as_string(stamps, unit="ns").astype(object)
    whole = np.datetime_as_string(stamps, unit="s").astype(object)
    text = np.where(whole_second, whole, np.where(kind <= 2, [s[:-2] for s in seven], text))
    text = np.char.add(np.char.replace(text.astype(str), "T", " "), "+00:00")
    table = pa.table({"TIMESTAMP": pa.array(text), "ContextTokens": rng.integers(1, 8000, rows),
                      "GeneratedTokens": rng.integers(1, 1000, rows)})
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:  # unquoted header, as in the real trace
        fh.write(b"TIMESTAMP,ContextTokens,GeneratedTokens\n")
        pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    os.replace(tmp, path)
    return path


def run(quick: bool) -> dict[str, Any]:
    from workloads.readers.azure_llm import read_azure_llm
    rows = QUICK_ROWS if quick else FULL_ROWS
    path = generated_file(rows)
    timings = []
    for _ in range(2 if quick else 3):
        t0 = time.perf_counter()
        workload = read_azure_llm(path)
        timings.append(time.perf_counter() - t0)
    assert len(workload) == rows
    best = min(timings)
    return {"target": "reader", "reader": "azure-llm", "file": str(path), "rows": rows,
            "file_bytes": path.stat().st_size, "seconds_best": best, "seconds_all": timings,
            "rows_per_s": rows / best, "goal_rows_per_s": 1_000_000, "cpus": os.cpu_count()}


def render(result: dict[str, Any], console: Console) -> None:
    table = Table(title="bench reader: Azure LLM 2024 format")
    for col in ("rows", "file MB", "best s", "rows/s", "goal rows/s"):
        table.add_column(col, justify="right")
    table.add_row(f"{result['rows']:,}", f"{result['file_bytes'] / 1e6:,.0f}", f"{result['seconds_best']:.2f}",
                  f"{result['rows_per_s']:,.0f}", f"{result['goal_rows_per_s']:,}")
    console.print(table)
