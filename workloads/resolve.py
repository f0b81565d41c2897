"""`resolve(spec, **params)`: the one way everything turns a preset, trace file or recipe into a Workload."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.contracts.errors import InputError, WarmbenchError
from workloads.workload import Workload


def _presets() -> dict[str, Callable[..., Workload]]:
    from workloads.azure_2024 import azure_2024_code, azure_2024_conv
    from workloads.synthetic import synthetic_week
    return {"synthetic-week": synthetic_week, "azure-2024-conv": azure_2024_conv, "azure-2024-code": azure_2024_code}


def _readers() -> dict[str, Callable[..., Workload]]:
    from workloads.readers.azure_llm import read_azure_llm
    from workloads.readers.tabular import read_canonical, read_mapped
    readers: dict[str, Callable[..., Workload]] = {
        "azure-llm": read_azure_llm, "canonical": read_canonical, "table": read_mapped}
    try:
        from workloads.readers.azure_functions import read_azure_functions
        from workloads.readers.burstgpt import read_burstgpt
        from workloads.readers.mooncake import read_mooncake
        readers.update({"azure-functions": read_azure_functions, "burstgpt": read_burstgpt,
                        "mooncake": read_mooncake})
    except ImportError:  # pragma: no cover - during bring-up
        pass
    return readers


PRESETS: tuple[str, ...] = ("synthetic-week", "azure-2024-conv", "azure-2024-code")


def _call(fn: Callable[..., Workload], what: str, *args: Any, typed: bool = True, **params: Any) -> Workload:
    """Call a reader or generator, turning an unknown parameter, or one of the wrong type for the
    function's annotation (`typed`), into a one-line user error naming it."""
    accepted = inspect.signature(fn).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        names = [n for n, p in accepted.items() if p.kind == p.KEYWORD_ONLY]
        raise WarmbenchError(f"{what} does not take parameter(s) {unknown}; it takes {names}")
    if typed and params:
        _check_types(fn, what, params)
    return fn(*args, **params)


def _check_types(fn: Callable[..., Workload], what: str, params: dict[str, Any]) -> None:
    """Each keyword parameter against the annotation of `fn` (pydantic, strict about NaN / inf)."""
    from typing import get_type_hints

    from pydantic import ConfigDict, TypeAdapter, ValidationError

    from harness.contracts.options import input_error

    hints = get_type_hints(fn)
    for name, value in params.items():
        if name not in hints:
            continue
        try:
            TypeAdapter(hints[name], config=ConfigDict(allow_inf_nan=False)).validate_python(value, strict=False)
        except ValidationError as exc:
            raise input_error(exc, what=f"{what}: ", noun="parameter", at=(name,)) from None
        except Exception:  # an annotation pydantic cannot build a validator for: the reader checks it
            continue


def resolve(spec: str | Path, **params: Any) -> Workload:
    """A preset name (`synthetic-week`, `azure-2024-conv`, `azure-2024-code`), a recipe `.toml`, or a
    trace file (format auto-detected).

    `format=` forces a reader; `columns=` (a canonical-name -> file-column mapping) reads any
    CSV / Parquet. Remaining params go to the reader or generator (e.g. `model=` for Azure).
    """
    presets = _presets()
    path = Path(spec)
    if str(spec) in presets and not path.exists():
        return _call(presets[str(spec)], f"preset {str(spec)!r}", typed=False, **params)  # workloads/params.py
    if not path.exists():
        hint = f"; presets are {sorted(presets)}" if not path.suffix else ""
        raise InputError(f"no such file or preset{hint}", file=str(path))
    if path.suffix.lower() == ".toml":
        from workloads.recipe import workload_from_recipe
        return _call(workload_from_recipe, "a recipe", path, **params)
    readers = _readers()
    fmt = params.pop("format", None)
    if fmt is None:
        if "columns" in params:
            fmt = "table"
        else:
            from workloads.readers.detect import detect_format
            fmt = detect_format(path)
    if fmt not in readers:
        raise WarmbenchError(f"unknown format {fmt!r}; known: {sorted(readers)}")
    return _call(readers[fmt], f"the {fmt} reader", path, **params)
