"""Validation at the edge, once: every run of an experiment grid and every output path is checked
when the command starts, so no run starts on a config that a later run would reject and no work
is lost to an output that cannot be written. Errors are InputErrors naming the file and the key.

    check_runs(specs, source_path)        # every RunSpec of a grid, before anything runs
    output_dir(path, flag) / output_file(path, flag)   # --out / --plot / --json FILE
"""

from __future__ import annotations

import inspect
import math
import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import workloads
from harness.contracts.errors import InputError, WarmbenchError
from systems.sim import registry, split_options
from systems.sim.specs import check_fits, model_spec, resolve_cluster
from workloads.params import check_preset_params
from workloads.readers.common import check_file
from workloads.readers.detect import detect_format
from workloads.recipe import load_recipe
from workloads.resolve import _check_types, _readers

if TYPE_CHECKING:
    from harness.experiment import RunSpec

MAX_SEED = 2**63 - 1


# ---------------------------------------------------------------- output paths

def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_parent(path: Path, flag: str) -> None:
    """The deepest existing ancestor must be a directory we can create entries in."""
    anchor = _nearest_existing(path.parent)
    if not anchor.is_dir():
        raise InputError(f"{flag}: cannot create {path}: {anchor} is not a directory", file=str(path))
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise InputError(f"{flag}: cannot write in {anchor} (permission denied)", file=str(path))


def output_dir(path: Path | str, flag: str = "--out") -> Path:
    """A directory the command will create or write into; checked without creating anything."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise InputError(f"{flag}: a symlink that leads nowhere (dangling or a loop)", file=str(p))
    if p.exists():
        if not p.is_dir():
            raise InputError(f"{flag}: exists and is not a directory", file=str(p))
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{flag}: cannot write in this directory (permission denied)", file=str(p))
        return p
    _check_parent(p, flag)
    return p


#: Image formats a `--plot` may have (matplotlib picks the format from the suffix).
PLOT_SUFFIXES: tuple[str, ...] = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def output_file(path: Path | str, flag: str = "--out", suffixes: tuple[str, ...] = ()) -> Path:
    """A file the command will (over)write, with one of `suffixes` if given; checked without creating anything."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise InputError(f"{flag}: a symlink that leads nowhere (dangling or a loop)", file=str(p))
    if p.exists():
        if p.is_dir():
            raise InputError(f"{flag}: is a directory, expected a file path", file=str(p))
        if not os.access(p, os.W_OK):
            raise InputError(f"{flag}: cannot overwrite (permission denied)", file=str(p))
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{flag}: expected a file ending in {' / '.join(suffixes)}", file=str(p))
    _check_parent(p, flag)
    return p


# ---------------------------------------------------------------- experiment grids

def check_runs(specs: Iterable[RunSpec], source_path: Path | str | None) -> None:
    """Validate every run of a grid before any runs: system known, every option within its bounds,
    cluster resolvable, models known and fitting, workload present with valid parameters, seeds and
    durations in range. The first problem is an InputError naming the file and the dotted key."""
    source = str(source_path) if source_path else None
    raw = _raw(source)
    clusters: dict[str, Any] = {}
    seen: set[str] = set()
    for spec in specs:
        _check_spec(spec, source, raw, clusters, seen)


def _raw(source: str | None) -> dict[str, Any]:
    """The experiment file as written, only to name where a value came from."""
    try:
        return tomllib.loads(Path(source).read_text(encoding="utf-8")) if source else {}
    except (OSError, ValueError):
        return {}


def _fail(message: str, source: str | None, key: str) -> InputError:
    return InputError(message, file=source, field=key)


def _option_key(raw: dict[str, Any], system_label: str, option: str) -> str:
    """`systems[i].options.X` when the system entry sets it, else `options.X`."""
    systems = raw.get("systems")
    if isinstance(systems, list):
        for i, entry in enumerate(systems):
            if isinstance(entry, dict) and (entry.get("label") or entry.get("name")) == system_label \
                    and option in (entry.get("options") or {}):
                return f"systems[{i}].options.{option}"
    return f"options.{option}"


def _system_key(raw: dict[str, Any], system_label: str) -> str:
    systems = raw.get("systems")
    if isinstance(systems, list):
        for i, entry in enumerate(systems):
            name = entry if isinstance(entry, str) else (entry.get("label") or entry.get("name")) \
                if isinstance(entry, dict) else None
            if name == system_label:
                return f"systems[{i}]" + ("" if isinstance(entry, str) else ".name")
    return "systems"


def _check_spec(spec: RunSpec, source: str | None, raw: dict[str, Any], clusters: dict[str, Any],
                seen: set[str]) -> None:
    label = str(spec.point.get("system", spec.system))
    if spec.models is not None and not spec.models:
        raise _fail("an empty list names no model; leave `models` out to serve the workload's own", source, "models")
    if not 0 <= int(spec.seed) <= MAX_SEED:
        raise _fail(f"seed {spec.seed} out of range; expected an integer in [0, 2^63)", source, "seeds")
    if spec.duration_s is not None and not (math.isfinite(spec.duration_s) and 0 < spec.duration_s <= 1e8):
        raise _fail(f"duration_s {spec.duration_s} must be a finite number > 0", source, "duration_s")
    for name, value in spec.slo.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise _fail(f"{value!r} must be a finite number > 0", source, f"slo.{name}")
    if spec.backend == "sim":
        _check_sim(spec, label, source, raw, clusters)
    else:
        _check_live(spec, label, source, raw)
    key = repr((spec.workload_spec, sorted(spec.workload_params.items(), key=str), spec.models, spec.seed))
    if key not in seen:
        seen.add(key)
        _check_workload(spec, source)


def _check_sim(spec: RunSpec, label: str, source: str | None, raw: dict[str, Any],
               clusters: dict[str, Any]) -> None:
    if spec.system not in registry.names():
        raise _fail(f"unknown system {spec.system!r}; registered: {', '.join(registry.names())}",
                    source, _system_key(raw, label))
    try:
        core, _ = split_options(spec.system, spec.options)
    except InputError as exc:
        raise _fail(str(exc), source, _option_key(raw, label, _first_quoted(str(exc)) or "?")) from None
    cluster = clusters.get(spec.cluster)
    if cluster is None:
        try:
            cluster = clusters[spec.cluster] = resolve_cluster(_relative(spec.cluster, source))
        except InputError:
            raise
        except WarmbenchError as exc:
            raise _fail(str(exc), source, "cluster") from None
    models = _known_models(spec)
    if models:
        try:
            check_fits({m: model_spec(m) for m in models}, cluster, core.gpu_memory_utilization)
        except WarmbenchError as exc:
            raise _fail(str(exc), source, "models") from None


def _first_quoted(text: str) -> str | None:
    match = re.search(r"option (?:'([^']+)'|(\w+)=)", text)
    return (match.group(1) or match.group(2)) if match else None


def _relative(cluster: str, source: str | None) -> str:
    """A cluster TOML path is relative to the experiment file, as the workload's is."""
    if source and cluster.endswith(".toml") and not Path(cluster).is_absolute():
        candidate = Path(source).parent / cluster
        if candidate.is_file():
            return str(candidate)
    return cluster


def _check_live(spec: RunSpec, label: str, source: str | None, raw: dict[str, Any]) -> None:
    from systems.live.registry import parse_options  # the live adapters (gevent): only for live runs

    try:
        parse_options(spec.system, dict(spec.options))
    except WarmbenchError as exc:
        option = _first_quoted(str(exc))
        key = _option_key(raw, label, option.split(".")[0]) if option else _system_key(raw, label)
        raise _fail(str(exc), source, key) from None


def _known_models(spec: RunSpec) -> list[str]:
    """Models the run will serve, where known without reading a trace."""
    if spec.models:
        return list(spec.models)
    if spec.workload_spec in workloads.PRESETS:
        models = spec.workload_params.get("models")
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        return list(models) if isinstance(models, (list, tuple)) else list(workloads.PAPER_MODELS)
    return []


def _check_workload(spec: RunSpec, source: str | None) -> None:
    """Preset parameters against the preset's model; a trace file present and readable, its
    parameters ones its reader takes. Nothing is generated or read in full here."""
    from harness.runner import workload_args  # the runner imports this module

    params, is_preset = workload_args(spec)  # what the run will resolve the workload with
    if is_preset:
        try:
            check_preset_params(spec.workload_spec, params)
        except InputError as exc:
            raise _fail(str(exc), source, _params_key(exc)) from None
        return
    path = Path(spec.workload_spec)
    if not path.exists():
        raise _fail(f"no such workload file or preset {spec.workload_spec!r}; presets: {list(workloads.PRESETS)}",
                    source, "workload.spec")
    if path.is_file():
        try:
            check_file(path)
        except InputError as exc:
            raise _fail(str(exc), source, "workload.spec") from None
    if path.suffix.lower() == ".toml":
        load_recipe(path)  # names the recipe file and key itself
        if params:
            raise _fail(f"a recipe takes no parameters, got {sorted(params)}", source, "workload.params")
        return
    fmt = params.pop("format", None)
    readers = _readers()
    if fmt is None:
        if "columns" in params:
            fmt = "table"
        else:
            try:
                fmt = detect_format(path)
            except InputError as exc:
                raise _fail(str(exc), source, "workload.spec") from None
    if fmt not in readers:
        raise _fail(f"unknown format {fmt!r}; known: {sorted(readers)}", source, "workload.params.format")
    _check_accepts(readers[fmt], f"the {fmt} reader", params, source)


def _check_accepts(fn: Any, what: str, params: dict[str, Any], source: str | None) -> None:
    accepted = inspect.signature(fn).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        names = [n for n, p in accepted.items() if p.kind == p.KEYWORD_ONLY]
        raise _fail(f"{what} does not take parameter(s) {unknown}; it takes {names}", source,
                    f"workload.params.{unknown[0]}")
    try:
        _check_types(fn, what, params)
    except InputError as exc:
        raise _fail(str(exc), source, _params_key(exc)) from None


def _params_key(exc: InputError) -> str:
    """`workload.params.K` for the parameter the error names (harness.contracts.options.input_error)."""
    return f"workload.params.{exc.key}" if exc.key else "workload.params"
