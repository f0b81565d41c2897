"""What every reader shares: locating bad input precisely, validated columns, sorting, provenance meta."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from harness.contracts.errors import InputError
from workloads.workload import Workload, canonical_frame


def check_file(path: str | Path) -> Path:
    """The path as a Path; a missing, unreadable or empty file is an InputError naming it."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", file=str(p))
    if not p.is_file():
        raise InputError("not a file", file=str(p))
    if p.stat().st_size == 0:
        raise InputError("the file is empty", file=str(p))
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(p)) from None
    return p


#: Largest token count accepted in a trace: far beyond any context window, far within int64.
MAX_TOKENS = 100_000_000
#: Longest span of arrival times accepted (about 30 years): beyond it, per-second tables overflow.
MAX_SPAN_S = 1e9


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file, so a result can name exactly which trace produced it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_csv(path: Path, column_types: dict[str, pa.DataType] | None = None,
             include_columns: list[str] | None = None) -> pa.Table:
    """Read a CSV with pyarrow (multi-threaded); parse errors become an InputError naming the file."""
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(column_types=column_types or {},
                                                 include_columns=include_columns or [],
                                                 strings_can_be_null=True),
        )
    except (OSError, pa.ArrowInvalid) as exc:
        if not isinstance(exc, pa.ArrowInvalid):
            raise InputError(f"cannot read: {exc.strerror or str(exc).splitlines()[0]}", file=str(path)) from None
        message = str(exc).splitlines()[0]
        if "Empty CSV file" in message:
            raise InputError("the file is empty", file=str(path)) from None
        row, found, expected = _ragged_row(path)
        if row is not None:
            raise InputError(f"has {found} fields where the header has {expected}", file=str(path), row=row) from None
        raise InputError(f"cannot parse as CSV: {message}", file=str(path)) from None
    if table.num_rows == 0:
        raise InputError("no data rows after the header", file=str(path))
    return table


def _ragged_row(path: Path) -> tuple[int | None, int, int]:
    """First data row (1-based) whose field count differs from the header's; only on the error path."""
    import csv
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        for row_no, fields in enumerate(reader, start=1):
            if fields and len(fields) != len(header):
                return row_no, len(fields), len(header)
    return None, 0, len(header)


def require_columns(columns: list[str], needed: list[str], path: Path) -> None:
    """Raise naming the first missing column and what the file has instead."""
    for name in needed:
        if name not in columns:
            raise InputError(f"missing column; the header has {columns}", file=str(path), row=0, field=name)
        if columns.count(name) > 1:  # which one is meant? (Arrow's lookup raised a KeyError)
            raise InputError(f"the header names this column {columns.count(name)} times", file=str(path), row=0,
                             field=name)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def token_column(values: pa.ChunkedArray | pd.Series | np.ndarray, name: str, path: Path,
                 row_offset: int = 1, row_numbers: list[int] | None = None) -> np.ndarray:
    """A token-count column as int64; a missing, non-numeric, fractional or negative value names its row.

    Rows are reported as index + `row_offset`, or `row_numbers[index]` when given (e.g. JSON lines).
    """
    def row_of(i: int) -> int:
        return row_numbers[i] if row_numbers is not None else i + row_offset

    if isinstance(values, (pa.ChunkedArray, pa.Array)) and pa.types.is_integer(values.type) \
            and values.null_count == 0:
        raw = values.to_numpy()  # fast path: clean integer column (uint64 too: checked before the cast)
        if len(raw) and raw.max() > MAX_TOKENS:
            i = _first_bad(raw > MAX_TOKENS)
            raise InputError(f"token count {raw[i]} is above the limit of {MAX_TOKENS}", file=str(path),
                             row=row_of(i), field=name)
        array = np.asarray(raw, dtype=np.int64)
        if len(array) and array.min() < 0:
            i = _first_bad(array < 0)
            raise InputError(f"negative token count {array[i]}", file=str(path), row=row_of(i), field=name)
        return array
    if isinstance(values, (pa.ChunkedArray, pa.Array)):
        series = values.to_pandas()
    else:
        series = pd.Series(values)
    numeric = pd.to_numeric(series, errors="coerce")
    bad = numeric.isna().to_numpy()
    if bad.any():
        i = _first_bad(bad)
        raw = series.iloc[i]
        what = "missing value" if raw is None or (isinstance(raw, float) and np.isnan(raw)) or raw == "" \
            else f"not a number: {raw!r}"
        raise InputError(f"token count {what}", file=str(path), row=row_of(i), field=name)
    array = numeric.to_numpy(dtype=np.float64)
    bad = array < 0
    if bad.any():
        i = _first_bad(bad)
        raise InputError(f"negative token count {array[i]:g}", file=str(path), row=row_of(i), field=name)
    bad = ~np.isfinite(array) | (array > MAX_TOKENS)
    if bad.any():
        i = _first_bad(bad)
        raise InputError(f"token count {series.iloc[i]} is above the limit of {MAX_TOKENS}", file=str(path),
                         row=row_of(i), field=name)
    bad = array != np.floor(array)
    if bad.any():
        i = _first_bad(bad)
        raise InputError(f"token count is not a whole number: {array[i]:g}", file=str(path),
                         row=row_of(i), field=name)
    return array.astype(np.int64)


def seconds_column(values: pa.ChunkedArray | pd.Series | np.ndarray, name: str, path: Path,
                   row_offset: int = 1, row_numbers: list[int] | None = None) -> np.ndarray:
    """A numeric time column (seconds) as float64; missing or non-numeric values name their row."""
    def row_of(i: int) -> int:
        return row_numbers[i] if row_numbers is not None else i + row_offset

    series = values.to_pandas() if isinstance(values, (pa.ChunkedArray, pa.Array)) else pd.Series(values)
    numeric = pd.to_numeric(series, errors="coerce")
    bad = numeric.isna().to_numpy() | ~np.isfinite(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        i = _first_bad(bad)
        raise InputError(f"not a time in seconds: {series.iloc[i]!r}", file=str(path),
                         row=row_of(i), field=name)
    return numeric.to_numpy(dtype=np.float64)


def timestamp_column(values: pa.ChunkedArray, name: str, path: Path, row_offset: int = 1) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the Unix epoch (UTC): float64 epoch seconds would lose the 7th digit.

    Accepts 0-9 fractional digits, `+00:00`-style offsets and rows without a fraction, in
    any mix: pyarrow's ISO-8601 parser handles the common case; pandas the mixed rest.
    """
    if pa.types.is_timestamp(values.type):
        if values.null_count:
            i = _first_bad(values.is_null().to_numpy(zero_copy_only=False))
            raise InputError("missing timestamp", file=str(path), row=i + row_offset, field=name)
        return np.asarray(pc.cast(values, pa.timestamp("ns", tz=values.type.tz)).cast(pa.int64()).to_numpy(),
                          dtype=np.int64)
    strings = values.to_pandas()
    try:
        parsed = pd.to_datetime(strings, format="ISO8601", utc=True, errors="coerce")
    except (ValueError, TypeError):
        parsed = pd.to_datetime(strings, format="mixed", utc=True, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = _first_bad(bad)
        raise InputError(f"cannot parse timestamp {strings.iloc[i]!r} (expected e.g. "
                         "2024-05-10 00:00:00.0099300+00:00)", file=str(path), row=i + row_offset, field=name)
    naive = parsed.dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("ns")
    return np.asarray(naive, dtype="datetime64[ns]").astype(np.int64)


def relative_seconds(ns: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Seconds since the first timestamp (exact to the ns before the float conversion), and the origin for meta."""
    origin_ns = int(ns.min())
    origin = pd.Timestamp(origin_ns, unit="ns", tz="UTC")
    return (ns - origin_ns) / 1e9, {"clock_origin_s": origin_ns / 1e9, "clock_origin": origin.isoformat()}


#: The string dtype canonical_frame gives the model column (pandas 3: arrow-backed `str`).
_MODEL_DTYPE = canonical_frame(np.zeros(1), "m", np.zeros(1), np.zeros(1))["model"].dtype


def request_frame(arrival_s: np.ndarray, model: np.ndarray | str, input_tokens: np.ndarray,
                  output_tokens: np.ndarray, *, already_sorted: bool,
                  extra_columns: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Same table as canonical_frame, built through Arrow so millions of rows take a fraction of a second.

    `extra_columns` (e.g. `session_id`) follow the canonical ones, sorted with them.
    """
    n = len(arrival_s)
    order = None if already_sorted else np.argsort(arrival_s, kind="stable")

    def take(a: np.ndarray) -> np.ndarray:
        return a if order is None else a[order]

    if isinstance(model, str):
        models = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([model])).cast(pa.string())
    else:
        models = pa.array(take(np.asarray(model, dtype=object)), type=pa.string())
    model_column = pd.array(models, dtype=_MODEL_DTYPE) if _MODEL_DTYPE != np.dtype(object) else models.to_numpy(zero_copy_only=False)
    return pd.DataFrame({
        "request_id": np.arange(n, dtype=np.int64),
        "arrival_s": take(np.asarray(arrival_s, dtype=np.float64)),
        "model": model_column,
        "input_tokens": take(np.asarray(input_tokens, dtype=np.int64)),
        "output_tokens": take(np.asarray(output_tokens, dtype=np.int64)),
        **{name: take(np.asarray(values)) for name, values in (extra_columns or {}).items()},
    })


def finish(path: Path | None, fmt: str, clock_s: np.ndarray, model: np.ndarray | str,
           input_tokens: np.ndarray, output_tokens: np.ndarray, *, rows_read: int,
           dropped: dict[str, int], params: dict[str, Any], sha256: str | None = None,
           extra: dict[str, Any] | None = None, origin_s: float | None = None,
           rows_kept: int | None = None, extra_columns: dict[str, np.ndarray] | None = None,
           row_numbers: list[int] | None = None) -> Workload:
    """Sort by arrival (counting rows that were out of order), zero the clock at the first arrival
    (or at `origin_s`), record provenance. Arrivals before `origin_s` or spanning more than
    MAX_SPAN_S are an InputError (rows named where they map 1:1, or by `row_numbers`)."""
    clock_s = np.asarray(clock_s, dtype=np.float64)
    if len(clock_s) == 0:
        raise InputError("no requests left after dropping " +
                         ", ".join(f"{k}: {v}" for k, v in dropped.items()), file=str(path) if path else None)
    unsorted = int((np.diff(clock_s) < 0).sum())
    origin = float(clock_s.min()) if origin_s is None else float(origin_s)

    def row_of(i: int) -> int | None:
        if row_numbers is not None:
            return row_numbers[i]
        return i + 1 if len(clock_s) == rows_read and not sum(dropped.values()) else None

    if clock_s.min() < origin:
        i = int(np.argmin(clock_s))
        raise InputError(f"arrival time {clock_s[i]:g} s is before the clock origin {origin:g} s (negative)",
                         file=str(path) if path else None, row=row_of(i))
    if clock_s.max() - origin > MAX_SPAN_S:
        i = int(np.argmax(clock_s))
        raise InputError(f"arrival times span {clock_s[i] - origin:.3g} s, more than {MAX_SPAN_S:.0e} s: a wrong "
                         "time unit or a corrupt value", file=str(path) if path else None, row=row_of(i))
    frame = request_frame(clock_s - origin, model, input_tokens, output_tokens, already_sorted=unsorted == 0,
                          extra_columns=extra_columns)
    kept = len(frame) if rows_kept is None else int(rows_kept)  # rows are not requests in some formats
    assert kept + sum(dropped.values()) == rows_read, (kept, dropped, rows_read)
    meta: dict[str, Any] = {
        "source": str(path) if path else None, "format": fmt,
        "sha256": sha256 if sha256 is not None else (sha256_file(path) if path else None),
        "params": params, "rows_read": int(rows_read), "rows_kept": int(kept),
        "dropped": {k: int(v) for k, v in dropped.items()}, "unsorted_rows": unsorted,
        "clock_origin_s": origin,
    }
    meta.update(extra or {})
    return Workload(frame, meta)
