"""Policy options validated once at the edge: CLI values arrive as strings, typos and bad values
become one clear WarmbenchError instead of a traceback deep in a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import WarmbenchError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def typed(system: str, options: Mapping[str, Any], defaults: Mapping[str, Any],
          positive: tuple[str, ...] = ()) -> dict[str, Any]:
    """Coerce each option to its default's type (bool, int, float); `positive` ones must be > 0."""
    out: dict[str, Any] = {}
    for name, default in defaults.items():
        value = options.get(name, default)
        try:
            if isinstance(default, bool):
                if isinstance(value, str):
                    if value.strip().lower() not in _TRUE + _FALSE:
                        raise ValueError(value)
                    value = value.strip().lower() in _TRUE
                else:
                    value = bool(value)
            elif isinstance(default, int):
                as_float = float(value)
                if as_float != int(as_float):
                    raise ValueError(value)
                value = int(as_float)
            elif isinstance(default, float):
                value = float(value)
        except (TypeError, ValueError) as exc:
            raise WarmbenchError(f"{system}: option {name}={value!r} is not a {type(default).__name__}") from exc
        if name in positive and not value > 0:
            raise WarmbenchError(f"{system}: option {name} must be > 0, got {value}")
        out[name] = value
    return out
