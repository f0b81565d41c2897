"""Experiments: a TOML file -> a validated config -> a grid of runs (`RunSpec`s); `harness.runner` runs them.

Any list-valued field is a sweep axis (the `systems` list, `seeds`, `cluster`, `duration_s`, each
value in `workload.params`, in `options` and in a system's own `options`); the grid is their
product. To pass a list as one value, wrap it: `[[a, b]]` (except LIST_VALUED names such as
`models` and `extra_args`, whose plain list is one value). Every point gets a readable run id,
unique in the grid (its folder under `results/<experiment>/`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PrivateAttr, ValidationError, field_validator

import systems.sim
from harness.capacity import CapacityConfig
from harness.capacity import check as check_capacity
from harness.contracts.errors import InputError, WarmbenchError
from harness.contracts.options import input_error
from harness.identity import config_sha256

#: Experiment presets shipped in the package.
PRESET_DIR = Path(__file__).parent / "experiments"
DEFAULT_PRESET = "default"
DEFAULT_RESULTS = Path("results")


class _Strict(BaseModel):
    #: strict: a TOML `true` or "2" where a number goes (seeds, slo, duration_s) is a wrong type,
    #: not 1 or 2.0; an int still passes as a float.
    model_config = ConfigDict(extra="forbid", strict=True)


class SystemConfig(_Strict):
    """One system to run; `label` tells two entries of the same system apart (default: the name)."""

    name: str
    label: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class WorkloadConfig(_Strict):
    """`spec`: a workload preset, a trace file or a recipe TOML (paths relative to the experiment file)."""

    spec: str
    params: dict[str, Any] = Field(default_factory=dict)


class SloConfig(_Strict):
    """Defaults: TTFT 1 s, TPOT 100 ms: ~10x the reference's 7B prefill, ~3x its 70B per-token decode."""

    ttft_s: PositiveFloat = 1.0
    tpot_s: PositiveFloat = 0.1


class ExperimentConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    backend: Literal["sim", "live"] = "sim"
    cluster: str | list[str] = "paper-16gpu"
    #: Models served. For a workload preset they are passed to it; a trace is filtered to them.
    models: list[str] | None = None
    workload: WorkloadConfig
    #: System entries, plain names, or "all" (every registered simulated system).
    systems: list[SystemConfig | str] | Literal["all"] = "all"
    #: Options given to every system (a system's own options win), e.g. engine_init_s.
    options: dict[str, Any] = Field(default_factory=dict)
    slo: SloConfig = Field(default_factory=SloConfig)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    duration_s: PositiveFloat | list[PositiveFloat] | None = None
    #: System label the report's ratios are against (default: the first system).
    baseline: str | None = None
    #: Dotted-key overrides applied by `--quick`, e.g. {"duration_s" = 120}.
    quick: dict[str, Any] = Field(default_factory=dict)
    #: Search the highest rate each system serves within the SLO instead of running one grid
    #: (harness.capacity).
    capacity: CapacityConfig | None = None
    #: The file it was read from (for error messages); not part of the config.
    _source: str = PrivateAttr(default="")

    @field_validator("models")
    @classmethod
    def _models_once(cls, value: list[str] | None) -> list[str] | None:
        models = value or []
        twice = sorted({m for m in models if models.count(m) > 1})
        if twice:  # one stream under two names merges into one: a copy needs its own name
            raise ValueError(f"models {twice} appear twice; name a distinct copy `{twice[0]}#1`")
        return value

    @field_validator("systems")
    @classmethod
    def _systems_named(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("name at least one system, or \"all\"")
        return value


@dataclass(frozen=True)
class RunSpec:
    """One point of the grid, fully resolved: all a worker process needs to do the run."""

    experiment: str
    run_id: str
    point: dict[str, Any]
    backend: str
    cluster: str
    system: str
    options: dict[str, Any]
    workload_spec: str
    workload_params: dict[str, Any]
    models: list[str] | None
    seed: int
    duration_s: float | None
    slo: dict[str, float]
    #: Hash of the cluster TOML's bytes (None for a preset): an edited cluster file reruns the run.
    cluster_sha256: str | None = None

    def config(self) -> dict[str, Any]:
        return asdict(self)

    def config_sha256(self) -> str:
        return config_sha256(self.config())


# ---------------------------------------------------------------- loading

def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise WarmbenchError(f"no experiment preset {name!r}; presets: {', '.join(preset_names())}")
    return path


def load(source: str | Path, *, quick: bool = False) -> tuple[ExperimentConfig, Path]:
    """Read and validate an experiment file (or preset name); errors name the file and the key."""
    path = Path(source)
    if not path.is_file():
        if path.suffix or os.sep in str(source):
            raise InputError("no such experiment file", file=str(path))
        path = preset_path(str(source))
    from harness.contracts.files import read_text

    try:
        raw = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", file=str(path)) from None
    return parse(raw, path, quick=quick), path


def parse(raw: dict[str, Any], path: Path, *, quick: bool = False) -> ExperimentConfig:
    """Validate a raw TOML dict; `quick` applies its `quick` overrides and suffixes the name."""
    if quick:
        raw = copy.deepcopy(raw)
        for dotted, value in (raw.get("quick") or {}).items():
            _set_dotted(raw, dotted, value)
        raw["name"] = f"{raw.get('name', path.stem)}-quick"
    raw.setdefault("name", path.stem)
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:  # live options may hold credentials: values are never quoted
        raise input_error(exc, noun="key", file=str(path), show_input=False) from None
    config._source = str(path)
    check_capacity(config)
    spec = config.workload.spec
    if ("/" in spec or spec.endswith((".toml", ".csv", ".parquet", ".jsonl", ".gz"))) and not Path(spec).is_absolute():
        config.workload.spec = str((path.parent / spec).resolve())
    return config


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


# ---------------------------------------------------------------- grid

def registered_systems() -> list[str]:
    """Every simulated system the registry knows."""
    return list(systems.sim.registry.names())


#: Parameters whose value is a list by nature: a list there is one value, not a sweep axis
#: (sweep them with a list of lists).
LIST_VALUED: frozenset[str] = frozenset({"models", "extra_args"})


def _axes(values: dict[str, Any], prefix: str) -> list[tuple[str, list[Any]]]:
    return [(f"{prefix}{k}", list(v)) for k, v in values.items()
            if isinstance(v, list) and (k not in LIST_VALUED or all(isinstance(x, list) for x in v))]


def _check_axes_nonempty(axes: list[tuple[str, list[Any]]], config: ExperimentConfig, index: int) -> None:
    """An empty sweep list would silently drop every run of the grid: an input error naming the key."""
    for name, values in axes:
        if not values:
            key = (f"workload.params.{name[9:]}" if name.startswith("workload.") else
                   f"systems[{index}].options.{name[15:]}" if name.startswith("system_options.") else name)
            raise InputError("an empty list sweeps nothing; give at least one value", file=config._source or None,
                             field=key)


def _check_no_secret_axis(axes: list[tuple[str, list[Any]]], config: ExperimentConfig, index: int) -> None:
    """A swept value names the run (its folder, the tables, the progress display): a credential
    (`api_key = ["k1", "k2"]`, headers, env maps, URLs with a password) must not be a sweep axis."""
    from harness.contracts.redact import redact

    for name, values in axes:
        leaf = name.rsplit(".", 1)[-1]
        if len(values) > 1 and any(redact({leaf: v}) != {leaf: v} for v in values):
            key = (f"workload.params.{name[9:]}" if name.startswith("workload.") else
                   f"systems[{index}].options.{name[15:]}" if name.startswith("system_options.") else name)
            raise InputError("holds credentials and cannot be a sweep axis (the value would name the run's "
                             "folder); run one experiment per credential", file=config._source or None, field=key)


def grid(config: ExperimentConfig) -> list[RunSpec]:
    """Every run of the experiment, in order: systems outermost, then the other axes, seeds innermost."""
    entries = [SystemConfig(name=s) if isinstance(s, str) else s for s in
               ([*registered_systems()] if config.systems == "all" else config.systems)]
    labels = [e.label or e.name for e in entries]
    if len(set(labels)) != len(labels):
        raise InputError(f"systems appear twice {labels}; give each entry a distinct `label`",
                         file=config._source or None, field="systems")
    if config.baseline is not None and config.baseline not in labels:
        raise InputError(f"baseline {config.baseline!r} is not one of the systems {labels}",
                         file=config._source or None, field="baseline")
    cluster_axis = config.cluster if isinstance(config.cluster, list) else [config.cluster]
    shared_axes = [("cluster", cluster_axis),
                   ("duration_s", config.duration_s if isinstance(config.duration_s, list) else [config.duration_s]),
                   *_axes(config.workload.params, "workload."), *_axes(config.options, "options.")]
    clusters = {c: _cluster_file(c, config._source) for c in cluster_axis}
    specs = []
    for entry, label in zip(entries, labels):
        axes = shared_axes + _axes(entry.options, "system_options.")
        _check_axes_nonempty(axes, config, entries.index(entry))
        _check_no_secret_axis(axes, config, entries.index(entry))
        swept = [name for name, vals in axes if len(vals) > 1]
        short = _short_names([n for n, _ in axes])
        for combo in itertools.product(*(vals for _, vals in axes), config.seeds):
            *chosen, seed = combo
            at = dict(zip((n for n, _ in axes), chosen))
            params = {**config.workload.params, **{k[9:]: v for k, v in at.items() if k.startswith("workload.")}}
            options = {**config.options, **{k[8:]: v for k, v in at.items() if k.startswith("options.")},
                       **entry.options, **{k[15:]: v for k, v in at.items() if k.startswith("system_options.")}}
            point = {"system": label, **{short[n]: at[n] for n in swept}, "seed": seed}
            specs.append(RunSpec(
                experiment=config.name, run_id=run_id(point), point=point, backend=config.backend,
                cluster=clusters[at["cluster"]][0], system=entry.name, options=options,
                workload_spec=config.workload.spec, workload_params=params, models=config.models, seed=seed,
                duration_s=at["duration_s"], slo=config.slo.model_dump(), cluster_sha256=clusters[at["cluster"]][1]))
    _check_unique_ids(specs, config._source)
    return specs


def _cluster_file(cluster: str, source: str) -> tuple[str, str | None]:
    """A cluster TOML path made absolute against the experiment file (as the workload's is, so a
    run does not depend on the working directory), with a hash of its bytes; a preset as it is."""
    if not isinstance(cluster, str) or not ("/" in cluster or cluster.endswith(".toml")):
        return cluster, None
    path = Path(cluster)
    if not path.is_absolute() and source:
        path = (Path(source).parent / path).resolve()
    try:
        return str(path), hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # missing or unreadable: validation names it before anything runs
        return str(path), None


#: Longest run id: a folder name must stay under the usual 255-byte limit, with room for `-N`.
MAX_RUN_ID = 200


def _check_unique_ids(specs: list[RunSpec], source: str) -> None:
    """Two points with one run id would overwrite each other: refuse the grid before anything runs.
    Ids are compared case-folded too (a case-insensitive file system would merge them)."""
    seen: dict[str, RunSpec] = {}
    for spec in specs:
        if len(spec.run_id.encode()) > MAX_RUN_ID:
            raise InputError(f"run id of point {spec.point} is {len(spec.run_id.encode())} bytes long "
                             f"(at most {MAX_RUN_ID}); shorten the system label or the swept values",
                             file=source or None, field="systems")
        key = spec.run_id.casefold()
        if key in seen:
            raise InputError(f"points {seen[key].point} and {spec.point} get the same run id {spec.run_id!r} "
                             "(one would overwrite the other); make the labels or values distinct",
                             file=source or None)
        seen[key] = spec


def _short_names(names: list[str]) -> dict[str, str]:
    last = [n.rsplit(".", 1)[-1] for n in names]
    return {n: (s if last.count(s) == 1 else n) for n, s in zip(names, last)}


def run_id(point: dict[str, Any]) -> str:
    """Readable, filesystem-safe: `warmserve_total_rps-5_seed-0`. Floats are written short when
    that is exact (`5`, `0.5`) and in full otherwise; `grid` refuses ids that still collide."""
    parts = [str(point["system"])] + [f"{k}-{_fmt(v)}" for k, v in point.items() if k != "system"]
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts))
    return "_" + text[1:] if text.startswith(".") else text  # never a hidden folder


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)
