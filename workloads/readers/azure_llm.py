"""Azure LLM inference traces 2023 and 2024 (`TIMESTAMP,ContextTokens,GeneratedTokens`): one model per file."""

from __future__ import annotations

from pathlib import Path

from workloads.readers.common import (
    check_file,
    finish,
    read_csv,
    relative_seconds,
    require_columns,
    timestamp_column,
    token_column,
)
from workloads.workload import Workload

COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]


def read_azure_llm(path: str | Path, *, model: str = "llama-2-7b") -> Workload:
    """All rows of the file as requests to `model`; timestamps of any precision, with or without offsets."""
    p = check_file(path)
    table = read_csv(p)
    require_columns(table.column_names, COLUMNS, p)
    clock_s, origin = relative_seconds(timestamp_column(table.column("TIMESTAMP"), "TIMESTAMP", p))
    inputs = token_column(table.column("ContextTokens"), "ContextTokens", p)
    outputs = token_column(table.column("GeneratedTokens"), "GeneratedTokens", p)
    return finish(p, "azure-llm", clock_s, model, inputs, outputs, rows_read=table.num_rows,
                  dropped={}, params={"model": model}, origin_s=0.0, extra=origin)


def is_azure_llm(header: list[str]) -> bool:
    return all(c in header for c in COLUMNS)


__all__ = ["read_azure_llm", "is_azure_llm"]
