"""Mooncake traces: JSON lines `{"timestamp": ms, "input_length", "output_length", "hash_ids"}`, one model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.contracts.errors import InputError
from workloads.readers.common import check_file, finish, seconds_column, token_column
from workloads.workload import Workload

FIELDS = ("timestamp", "input_length", "output_length")


def read_mooncake(path: str | Path, *, model: str = "llama-2-7b") -> Workload:
    """All lines as requests to `model`; timestamps are milliseconds."""
    p = check_file(path)
    columns: dict[str, list[object]] = {f: [] for f in FIELDS}
    line_numbers: list[int] = []
    rows = 0
    with open(p, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 text (byte {exc.start} of the line)", file=str(p), row=line_no) from None
            if not line.strip():
                continue
            rows += 1
            line_numbers.append(line_no)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON: {exc.msg}", file=str(p), row=line_no) from None
            if not isinstance(record, dict):
                raise InputError("expected a JSON object", file=str(p), row=line_no)
            for f in FIELDS:
                if f not in record:
                    raise InputError("missing field", file=str(p), row=line_no, field=f)
                value = record[f]
                columns[f].append(value if isinstance(value, (int, float)) and not isinstance(value, bool)
                                  else str(value))
    if rows == 0:
        raise InputError("no records", file=str(p))
    # Errors name the line in the file (blank lines skipped), not the index among records.
    clock_ms = seconds_column(np.array(columns["timestamp"], dtype=object), "timestamp", p, row_numbers=line_numbers)
    inputs = token_column(np.array(columns["input_length"], dtype=object), "input_length", p,
                          row_numbers=line_numbers)
    outputs = token_column(np.array(columns["output_length"], dtype=object), "output_length", p,
                           row_numbers=line_numbers)
    return finish(p, "mooncake", clock_ms / 1000.0, model, inputs, outputs, rows_read=rows, dropped={},
                  params={"model": model}, origin_s=0.0, row_numbers=line_numbers)
