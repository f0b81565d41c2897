"""argparse `type=` functions with bounds, shared by every command: a bad number is rejected while
the arguments are parsed (exit 2, one line naming the flag), before any work starts.

    p.add_argument("--duration-s", type=positive_float)
    p.add_argument("--seed", type=seed_int, default=0)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

#: Largest int accepted anywhere on the command line (seeds, counts): fits int64 with room.
MAX_INT = 2**62
#: Largest float accepted (durations, scales): finite and far beyond any real run.
MAX_FLOAT = 1e12


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text) if kind is float else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'a number' if kind is float else 'an integer'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if abs(value) > (MAX_FLOAT if kind is float else MAX_INT):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (durations, rates, scales)."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return float(value)


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return float(value)


def positive_int(text: str) -> int:
    """An integer >= 1 (jobs, nodes, counts)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return int(value)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds, offsets)."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return int(value)


#: Seeds are non-negative integers (numpy's generators reject negative ones).
seed_int = non_negative_int


def path_arg(text: str) -> Path:
    """A file or directory path; an empty one (`--out "$UNSET"`) is not the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)
