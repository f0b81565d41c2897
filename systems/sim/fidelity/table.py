"""The validation table: published third-party measurements, one row per number, with the setup
needed to re-simulate it (columns as in `published.csv`; sources in SOURCES.md).

`read_table(path)` returns typed `Row`s or raises one InputError naming the file, the 1-based
data row and the column (a missing column, a number that does not parse, an unknown group or
unit, a serving row without its token counts). Both `bench fidelity` and `calibrate --table`
read tables through it, and so does the start-cost helper (`simulate_start_row(row)`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from harness.contracts.errors import InputError

#: The table shipped with the package (bench fidelity's default).
PUBLISHED_CSV = Path(__file__).with_name("published.csv")
COLUMNS: tuple[str, ...] = ("id", "group", "source", "gpu", "model", "tp", "engine", "engine_mode",
                            "input_tokens", "output_tokens", "batch", "metric", "value", "unit", "note")
#: Groups and their band: |simulated / published - 1| must stay within it.
BANDS: dict[str, float] = {"serving": 0.10, "other-engine": 0.35, "weight-load": 0.20,
                           "engine-start": 0.20, "sleep-wake": 0.20}
GROUPS: tuple[str, ...] = tuple(BANDS)
#: Groups whose rows are requests served by a warm engine (the rest are start costs).
SERVING_GROUPS: tuple[str, ...] = ("serving", "other-engine")
#: Unit -> seconds per unit.
UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


class NotSimulated(Exception):
    """A row whose setup the simulator cannot express (FP8, MoE, an unknown GPU): `reason` says why.
    The bench shows it as "not simulated: <reason>", never drops it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Row:
    """One published number and its setup. Token counts and batch are None for start rows."""

    id: str
    group: str
    source: str
    gpu: str
    model: str
    tp: int
    engine: str
    engine_mode: str
    input_tokens: int | None
    output_tokens: int | None
    batch: int | None
    metric: str
    value: float
    unit: str
    note: str

    @property
    def band(self) -> float:
        return BANDS[self.group]

    @property
    def value_s(self) -> float:
        """The published value in seconds."""
        return self.value * UNITS[self.unit]

    @property
    def held_out(self) -> bool:
        """A row kept out of every fit (its note starts with "held out"): it checks the mechanism on
        setups nobody fitted to, so the shipped defaults' fit must not see it."""
        return self.note.strip().lower().startswith("held out")

    def get(self, key: str, default: object = None) -> object:
        """Dict-style access, for code written against a plain dict row."""
        return getattr(self, key, default)

    def __getitem__(self, key: str) -> object:
        if key not in COLUMNS:
            raise KeyError(key)
        return getattr(self, key)


def read_table(path: Path | str = PUBLISHED_CSV) -> list[Row]:
    """Every row of a validation CSV, validated; an empty table is an error too."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", file=str(path)) from None
    except FileNotFoundError:
        raise InputError("no such file", file=str(path)) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a CSV file", file=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            raise InputError("empty file; expected a header with columns " + ", ".join(COLUMNS), file=str(path))
        header = [h.strip() for h in header]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise InputError(f"missing column(s) {', '.join(missing)}; a validation table has "
                             + ", ".join(COLUMNS), file=str(path), row=0, field=missing[0])
        index = {c: header.index(c) for c in COLUMNS}
        rows: list[Row] = []
        seen: dict[str, int] = {}
        for n, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue
            row = _row(cells, index, str(path), n)
            if row.id in seen:
                raise InputError(f"duplicate id {row.id!r} (first on row {seen[row.id]})", file=str(path), row=n,
                                 field="id")
            seen[row.id] = n
            rows.append(row)
    except csv.Error as exc:
        raise InputError(f"not valid CSV: {exc}", file=str(path)) from None
    if not rows:
        raise InputError("no data rows", file=str(path))
    return rows


def _row(cells: list[str], index: dict[str, int], file: str, n: int) -> Row:
    def cell(col: str) -> str:
        i = index[col]
        return cells[i].strip() if i < len(cells) else ""

    def bad(col: str, why: str) -> InputError:
        return InputError(why, file=file, row=n, field=col)

    def integer(col: str, required: bool) -> int | None:
        text = cell(col)
        if not text:
            if required:
                raise bad(col, "missing; a serving row needs input_tokens, output_tokens and batch")
            return None
        try:
            value = int(text)
        except ValueError:
            raise bad(col, f"not an integer: {text!r}") from None
        if not 1 <= value <= 10**7:
            raise bad(col, f"out of range: {value} (expected 1 to 10,000,000)")
        return value

    group = cell("group")
    if group not in BANDS:
        raise bad("group", f"unknown group {group!r}; known: {', '.join(GROUPS)}")
    unit = cell("unit")
    if unit not in UNITS:
        raise bad("unit", f"unknown unit {unit!r}; known: {', '.join(UNITS)}")
    for col in ("id", "model", "metric"):
        if not cell(col):
            raise bad(col, "missing")
    text = cell("value")
    try:
        value = float(text)
    except ValueError:
        raise bad("value", f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise bad("value", f"expected a finite number > 0, got {text!r}")
    serving = group in SERVING_GROUPS
    tp = integer("tp", False) or 1
    return Row(id=cell("id"), group=group, source=cell("source"), gpu=cell("gpu"), model=cell("model"), tp=tp,
               engine=cell("engine"), engine_mode=cell("engine_mode"),
               input_tokens=integer("input_tokens", serving), output_tokens=integer("output_tokens", serving),
               batch=integer("batch", serving), metric=cell("metric"), value=value, unit=unit, note=cell("note"))
