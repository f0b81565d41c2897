"""Azure Functions 2019 per-minute invocation counts, mapped to models as AlpaServe and MuxServe do.

Columns `HashOwner,HashApp,HashFunction,Trigger,1..1440`; each cell is the number of
invocations of that function in that minute. Functions are ordered by total invocations
(most first) and mapped to models round-robin (function i -> model i mod N) or stripe
(contiguous blocks of functions per model). Within a minute, arrivals are evenly spaced
(`uniform`) or uniformly random, i.e. a Poisson process given the count (`poisson`, seeded).
The trace has no token counts: they are drawn from the Azure 2023 `lengths` table, seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from harness.contracts.errors import InputError, WarmbenchError
from workloads.lengths import LENGTH_TABLES, sample_tokens
from workloads.readers.common import check_file, finish, read_csv, require_columns, sha256_file
from workloads.workload import Workload

ID_COLUMNS = ["HashOwner", "HashApp", "HashFunction", "Trigger"]
DEFAULT_MODELS = ("llama-2-7b", "llama-2-7b#1", "llama-2-13b", "llama-2-70b")


def read_azure_functions(path: str | Path, *, models: Sequence[str] = DEFAULT_MODELS,
                         mapping: str = "round-robin", arrivals: str = "poisson", seed: int = 0,
                         max_functions: int | None = None, lengths: str = "conv") -> Workload:
    """One day file as a multi-model workload; rows are functions, so rows_kept counts functions kept."""
    if mapping not in ("round-robin", "stripe"):
        raise WarmbenchError(f"mapping must be 'round-robin' or 'stripe', got {mapping!r}")
    if arrivals not in ("uniform", "poisson"):
        raise WarmbenchError(f"arrivals must be 'uniform' or 'poisson', got {arrivals!r}")
    if lengths not in LENGTH_TABLES:
        raise WarmbenchError(f"lengths must be one of {sorted(LENGTH_TABLES)}, got {lengths!r}")
    if not models:
        raise WarmbenchError("azure-functions needs at least one model")
    p = check_file(path)
    table = read_csv(p, column_types={c: pa.string() for c in ID_COLUMNS})
    names = table.column_names
    require_columns(names, ID_COLUMNS + ["1"], p)
    minute_cols = [c for c in names if c.isdigit()]
    counts = np.empty((table.num_rows, len(minute_cols)), dtype=np.int64)
    for j, col in enumerate(minute_cols):
        values = table.column(col)
        if not pa.types.is_integer(values.type) or values.null_count:
            series = values.to_pandas()
            numeric = series.apply(lambda v: v if isinstance(v, (int, float)) else _to_number(v))
            bad = numeric.isna().to_numpy() | (np.mod(numeric.fillna(0).to_numpy(dtype=float), 1) != 0)
            i = int(np.flatnonzero(bad)[0]) if bad.any() else None
            if i is not None:
                raise InputError(f"invocation count is not a whole number: {series.iloc[i]!r}", file=str(p),
                                 row=i + 1, field=col)
            values = pa.array(numeric.to_numpy(dtype=np.int64))
        column = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)
        if len(column) and column.min() < 0:
            i = int(np.flatnonzero(column < 0)[0])
            raise InputError(f"negative invocation count {column[i]}", file=str(p), row=i + 1, field=col)
        counts[:, j] = column
    minute_index = np.array([int(c) - 1 for c in minute_cols], dtype=np.int64)
    totals = counts.sum(axis=1)
    order = np.argsort(-totals, kind="stable")
    active = order[totals[order] > 0]
    dropped = {"no_invocations": int((totals == 0).sum())}
    if max_functions is not None and len(active) > max_functions:
        dropped["not_selected"] = int(len(active) - max_functions)
        active = active[:max_functions]
    n_models = len(models)
    rank = np.arange(len(active))
    model_of = rank % n_models if mapping == "round-robin" else (rank * n_models) // max(len(active), 1)
    rng = np.random.default_rng(seed)
    sel = counts[active]  # functions x minutes
    per_cell = sel.ravel()
    cell_minute = np.tile(minute_index, len(active))
    cell_model = np.repeat(model_of, len(minute_cols))
    n = int(per_cell.sum())
    minute = np.repeat(cell_minute, per_cell)
    model_idx = np.repeat(cell_model, per_cell)
    if arrivals == "uniform":
        # k-th of c arrivals in a minute at (k + 0.5) * 60 / c
        starts = np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
        k = np.arange(n) - starts
        offset = (k + 0.5) * 60.0 / np.repeat(per_cell, per_cell)
    else:
        offset = rng.random(n) * 60.0
    clock_s = minute * 60.0 + offset
    model_names = np.asarray(list(models), dtype=object)[model_idx]
    inputs = sample_tokens(rng, lengths, "input", n)
    outputs = sample_tokens(rng, lengths, "output", n)
    return finish(p, "azure-functions", clock_s, model_names, inputs, outputs, rows_read=table.num_rows,
                  dropped=dropped, rows_kept=len(active), origin_s=0.0, sha256=sha256_file(p),
                  params={"models": list(models), "mapping": mapping, "arrivals": arrivals, "seed": int(seed),
                          "max_functions": max_functions, "lengths": lengths},
                  extra={"rows_are": "functions", "requests": n,
                         "functions_per_model": {str(m): int((model_of == i).sum()) for i, m in enumerate(models)}})


def _to_number(value: object) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        return float("nan")
