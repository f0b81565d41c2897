"""File helpers every layer needs: read a text input (a located InputError, not a traceback) and
write JSON atomically, strict (NaN as null) and redacted."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.contracts.errors import InputError
from harness.contracts.redact import redact


def read_text(path: Path | str) -> str:
    """A text input file (TOML, JSON) as str; missing, unreadable or non-UTF-8 is an InputError."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8").removeprefix("\ufeff")  # a BOM (Windows editors) is not TOML
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", file=str(p)) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a file", file=str(p)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(p)) from None


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a manifest."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(redact(strict(obj)), indent=2, default=str, sort_keys=True))  # no credentials
    tmp.replace(path)


def strict(obj: Any) -> Any:
    """Make `obj` strict JSON: NaN / inf become null, so "unavailable" stays distinguishable from 0."""
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
