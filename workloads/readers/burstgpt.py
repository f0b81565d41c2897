"""BurstGPT releases 1-3, read by column name (release 3 inserts `Session ID`, `Elapsed time`).

`Timestamp` is seconds from the first day's midnight; the `Model` column is kept (mapped
to preset names with `model_map`), and release 3's `Session ID` becomes `session_id`. Rows with zero response tokens are failed requests:
dropped by default and counted under `failed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from harness.contracts.errors import InputError
from workloads.readers.common import check_file, finish, read_csv, require_columns, seconds_column, token_column
from workloads.workload import Workload

COLUMNS = ["Timestamp", "Model", "Request tokens", "Response tokens"]
#: BurstGPT's two services, as the model presets that stand in for them.
DEFAULT_MODEL_MAP: dict[str, str] = {"ChatGPT": "llama-2-7b", "GPT-4": "llama-2-70b"}


def read_burstgpt(path: str | Path, *, model_map: Mapping[str, str] | None = None,
                  keep_failures: bool = False) -> Workload:
    """Requests with their timestamps and models; `model_map` renames models (unlisted ones stay)."""
    p = check_file(path)
    table = read_csv(p)
    require_columns(table.column_names, COLUMNS, p)
    clock_s = seconds_column(table.column("Timestamp"), "Timestamp", p)
    inputs = token_column(table.column("Request tokens"), "Request tokens", p)
    outputs = token_column(table.column("Response tokens"), "Response tokens", p)
    raw_models = table.column("Model").to_pandas()
    missing = raw_models.isna().to_numpy()
    if missing.any():
        raise InputError("missing model name", file=str(p), row=int(np.flatnonzero(missing)[0]) + 1, field="Model")
    mapping = dict(DEFAULT_MODEL_MAP if model_map is None else model_map)
    models = raw_models.astype(str).map(lambda m: mapping.get(m, m)).to_numpy(dtype=object)
    failed = outputs == 0
    dropped = {"failed": 0 if keep_failures else int(failed.sum())}
    keep = np.ones(len(outputs), dtype=bool) if keep_failures else ~failed
    sessions = None
    if "Session ID" in table.column_names:  # release 3: keep sessions for multi-turn analysis
        sessions = {"session_id": table.column("Session ID").to_pandas().astype(str).to_numpy(dtype=object)[keep]}
    extra = {"failed_rows": int(failed.sum()), "zero_input_and_output_rows": int(((inputs == 0) & failed).sum()),
             "release": 3 if "Session ID" in table.column_names else None}
    return finish(p, "burstgpt", clock_s[keep], models[keep], inputs[keep], outputs[keep],
                  rows_read=table.num_rows, dropped=dropped,
                  params={"model_map": mapping, "keep_failures": bool(keep_failures)}, extra=extra,
                  extra_columns=sessions)
