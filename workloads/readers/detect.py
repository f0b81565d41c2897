"""Which reader a file needs, from its header (first line, or Parquet schema), never from its name alone."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from harness.contracts.errors import InputError
from workloads.readers.common import check_file
from workloads.readers.tabular import is_parquet

FORMATS: tuple[str, ...] = ("azure-llm", "azure-functions", "burstgpt", "mooncake", "canonical")


def header_of(path: Path) -> list[str]:
    """Column names: Parquet schema, keys of the first JSON line, or the CSV header split on commas."""
    if is_parquet(path):
        try:
            return list(pq.read_schema(path).names)
        except (OSError, ValueError) as exc:  # ArrowInvalid is both
            raise InputError(f"cannot read as Parquet: {str(exc).splitlines()[0]}", file=str(path)) from None
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20).decode("utf-8-sig", errors="replace").strip()
    if first.startswith("{"):
        try:
            return list(json.loads(first).keys())
        except json.JSONDecodeError:
            raise InputError("first line looks like JSON but does not parse", file=str(path), row=1) from None
    return [c.strip().strip('"') for c in first.split(",")]


def detect_format(path: str | Path) -> str:
    """One of FORMATS; an unknown header is an InputError that says how to map columns instead."""
    p = check_file(path)
    header = header_of(p)
    names = set(header)
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= names:
        return "azure-llm"
    if {"HashOwner", "HashApp", "HashFunction"} <= names:
        return "azure-functions"
    if {"Timestamp", "Request tokens", "Response tokens"} <= names:
        return "burstgpt"
    if {"timestamp", "input_length", "output_length"} <= names:
        return "mooncake"
    if {"arrival_s", "input_tokens", "output_tokens"} <= names:
        return "canonical"
    raise InputError(
        f"unknown trace format (header {header[:8]}); supported: {', '.join(FORMATS)}; for other "
        "tables pass columns={'arrival_s': ..., 'model': ..., 'input_tokens': ..., 'output_tokens': ...}",
        file=str(p), row=0)
