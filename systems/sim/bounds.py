"""Declared type and bounds of every simulator option, checked in one place (`check_options`).

Values arrive from the CLI as str/int/float/bool and from TOML as any of those: each is coerced to
its declared type and checked against its bounds, so a negative time, a zero size, NaN / inf, a
huge int or a word where a number belongs is one InputError naming the option, before any run
starts; no value can make the simulator hang or produce nonsense (negative TTFTs, no ticks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from harness.contracts.errors import InputError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

#: A sane ceiling for sizes and counts: far above any real setting, far below int64 overflow.
MAX_COUNT = 10**12
#: A sane ceiling for durations: about 30 years of virtual time.
MAX_SECONDS = 1e9
#: Shortest controller period: a smaller one would take hours of wall time per simulated hour.
MIN_TICK_S = 0.01


@dataclass(frozen=True)
class Bound:
    """`kind` is bool, int or float; `low` / `high` inclusive unless the matching `*_open` is set;
    `auto`: None (or the word "auto") is allowed too, meaning "derived" (e.g. engine_init_s)."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    auto: bool = False

    def describe(self) -> str:
        if self.auto:
            return f"{Bound(self.kind, self.low, self.high, self.low_open, self.high_open).describe()}, or auto"
        if self.kind is bool:
            return "a boolean (true/false)"
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        span = " and ".join(p for p in (lo, hi) if p)
        noun = "an integer" if self.kind is int else "a finite number"
        return f"{noun} {span}".strip()


def flag() -> Bound:
    return Bound(bool)


def seconds(*, positive: bool = False, low: float = 0.0, high: float = MAX_SECONDS, auto: bool = False) -> Bound:
    """A duration: >= 0 (or > 0 with `positive`, or >= `low`), finite, at most `high`; with `auto`,
    also None / "auto" (derived by the simulator)."""
    return Bound(float, low, high, low_open=positive, auto=auto)


def count(low: int = 1, high: int = MAX_COUNT) -> Bound:
    """A size or count: an integer in [low, high] (low 0 where 0 means "off" or "default")."""
    return Bound(int, low, high)


def fraction(*, zero_ok: bool = False, one_ok: bool = True) -> Bound:
    """A share in (0, 1] by default."""
    return Bound(float, 0.0, 1.0, low_open=not zero_ok, high_open=not one_ok)


def number(low: float | None = None, high: float | None = None) -> Bound:
    return Bound(float, low, high)


def coerce(name: str, value: Any, bound: Bound, *, where: str = "", file: str | None = None) -> Any:
    """`value` as `bound.kind`, within the bounds; else an InputError naming the option."""
    def bad(why: str) -> InputError:
        return InputError(f"{where}option {name}={value!r}: {why}; expected {bound.describe()}",
                          file=file, field=name if file else None)

    if bound.auto and (value is None or (isinstance(value, str) and value.strip().lower() == "auto")):
        return None
    if bound.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("not a boolean")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad(f"not a number ({type(value).__name__})")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            try:
                value = float(value.strip())
            except ValueError:
                raise bad("not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise bad("not finite")
    if bound.kind is int:
        if isinstance(value, float):
            if value != int(value):
                raise bad("not a whole number")
        value = int(value)
    else:
        value = float(value)
    if bound.low is not None and (value <= bound.low if bound.low_open else value < bound.low):
        raise bad("out of range")
    if bound.high is not None and (value >= bound.high if bound.high_open else value > bound.high):
        raise bad("out of range")
    return value


def check_options(options: Mapping[str, Any], bounds: Mapping[str, Bound], *, where: str = "",
                  file: str | None = None) -> dict[str, Any]:
    """Each option coerced and checked against its bound; a name without one is an unknown option."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        bound = bounds.get(name)
        if bound is None:
            raise InputError(f"{where}unknown option {name!r}; known: {', '.join(sorted(bounds))}",
                             file=file, field=name if file else None)
        out[name] = coerce(name, value, bound, where=where, file=file)
    return out


#: Bounds of systems.sim.core.CORE_OPTIONS (a test checks that both name the same options).
CORE_BOUNDS: dict[str, Bound] = {
    "engine_init_s": seconds(high=86_400.0, auto=True),  # None / auto: derived (systems/sim/startup.py)
    "process_start_s": seconds(high=86_400.0),
    "gpu_memory_utilization": fraction(),
    "block_size": count(1, 4096),
    "max_num_seqs": count(1, 1_000_000),
    "max_num_batched_tokens": count(1, 10**9),
    "chunked_prefill_tokens": count(0, 10**9),   # 0: chunked prefill off
    "max_model_len": count(0, 10**9),            # 0: no limit
    "max_drain_s": seconds(high=86_400.0),       # ticks run until then while a request is unserved
    "cuda_graphs": flag(),                       # engine mode: CUDA-graph decode (true) or eager
    "test_slowdown": number(1.0, 100.0),         # testing only: the gate's planted regression (perf.py)
}
