"""Experiments: a TOML file -> a validated config -> a grid of runs -> `results/<experiment>/<run-id>/`.

Any list-valued field is a sweep axis (the `systems` list, `seeds`, `cluster`, `duration_s`, each
value in `workload.params`, in `options` and in a system's own `options`); the grid is their
product. To pass a list as one value, wrap it: `[[a, b]]` (except LIST_VALUED names such as
`models` and `extra_args`, whose plain list is one value). Runs are independent, so the grid runs
in a process pool or as Ray tasks (`harness.executors`). Resume: a run is skipped only when its
directory holds a complete run with the same resolved config, the same workload (hash of the
requests replayed) and the same code (commit and uncommitted changes, see
`identity.code_identity`); any other earlier attempt is moved to the experiment's `.history/`
(see `harness.store`), never deleted. Ctrl-C stops the whole grid.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import itertools
import json
import os
import re
import signal
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PrivateAttr, ValidationError, field_validator

import systems.sim
import workloads
from harness.capacity import CapacityConfig
from harness.capacity import check as check_capacity
from harness.contracts.errors import InputError, WarmbenchError
from harness.contracts.files import write_json
from harness.identity import code_identity, config_sha256, workload_sha256
from harness.store import (
    COMPLETE,
    EXPERIMENT_FILE,
    FAILED,
    INCOMPLETE,
    archive_run,
    new_manifest,
    read_summary,
    write_manifest,
    write_run,
)

if TYPE_CHECKING:
    from harness.executors import Executor

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
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise InputError(f"{err['msg']}{more}", file=str(path), field=key) from None
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


# ---------------------------------------------------------------- running

@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # complete | incomplete | skipped | failed
    wall_s: float = 0.0
    error: str = ""
    user_error: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    #: Stopped by Ctrl-C: the grid stops after it.
    interrupted: bool = False
    #: More than half of the requests not ok (or none): see harness.store.Manifest.
    mostly_failed: bool = False
    requests_summary: dict[str, int] | None = None


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the grid: `outcomes` holds the runs that ended (the interrupted one
    incomplete); the others in `missing` were not started."""

    def __init__(self, exp_dir: Path, outcomes: list[RunOutcome], missing: list[RunSpec]) -> None:
        super().__init__("interrupted")
        self.exp_dir, self.outcomes, self.missing = exp_dir, outcomes, missing


def current_code() -> dict[str, Any]:
    """The checkout's code identity (commit + hash of uncommitted changes): results are only reused for the same code."""
    return code_identity()


def is_done(spec: RunSpec, run_dir: Path, code: dict[str, Any] | None = None,
            workload_hash: str | None = None) -> bool:
    """Complete, with the same config, the same workload and the same code: safe to skip."""
    return done_manifest(spec, run_dir, code, workload_hash) is not None


def done_manifest(spec: RunSpec, run_dir: Path, code: dict[str, Any] | None = None,
                  workload_hash: str | None = None) -> dict[str, Any] | None:
    """The run's manifest when it is done (see `is_done`), else None."""
    manifest = run_dir / "manifest.json"
    if not manifest.is_file() or workload_hash is None:
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("code"), dict):
        return None  # written before runs recorded their code: cannot tell, redo
    mine = code or {}
    done = (data.get("status") == COMPLETE and data.get("config_sha256") == spec.config_sha256()
            and data.get("workload_sha256") == workload_hash
            and data["code"].get("revision") == mine.get("revision")
            and data["code"].get("diff_sha256") == mine.get("diff_sha256")
            and _rows_match(run_dir / "requests.parquet", data.get("requests_summary")))
    return data if done else None


def _rows_match(table: Path, counts: Any) -> bool:
    """The request table is there, is Parquet and holds the requests the manifest counts: a table
    truncated or replaced after the run is not a result to reuse (it is redone, the old one kept)."""
    import pyarrow.parquet as pq

    if not table.is_file() or not isinstance(counts, dict):
        return False
    try:
        return pq.read_metadata(table).num_rows == counts.get("total")
    except Exception:  # noqa: BLE001 - any unreadable table (ArrowInvalid, OSError): redo the run
        return False


def _workload_args(spec: RunSpec) -> tuple[dict[str, Any], bool]:
    """Parameters to resolve the run's workload with, and whether it is a preset."""
    params = dict(spec.workload_params)
    is_preset = spec.workload_spec in workloads.PRESETS
    if spec.models and is_preset:
        params.setdefault("models", list(spec.models))
    if is_preset:
        params.setdefault("seed", spec.seed)
    return params, is_preset


def resolve_workload(spec: RunSpec, source: str = "") -> workloads.Workload:
    """The run's workload: a preset gets the experiment's models and the run's seed (so `seeds`
    gives independent draws of the workload, unless `workload.params.seed` pins one); a trace is
    filtered to the models. No requests left is an input error (`source`: the experiment file)."""
    params, is_preset = _workload_args(spec)
    workload = workloads.resolve(spec.workload_spec, **params)
    if spec.models and not is_preset:
        keep = workload.requests["model"].isin(spec.models)
        if len(workload) and not keep.any():
            raise InputError(f"none of the workload's requests is for one of {list(spec.models)}; "
                             f"{spec.workload_spec} has models {workload.models[:10]}",
                             file=source or None, field="models")
        workload = workloads.Workload(workload.requests[keep].reset_index(drop=True),
                                      {**workload.meta, "filtered_to_models": list(spec.models)}, workload.history)
    if not len(workload):
        raise InputError(f"workload {spec.workload_spec} with {spec.workload_params} has no requests",
                         file=source or None, field="workload")
    return workload


def resolve_workloads(specs: list[RunSpec], source: str = "") -> dict[str, Any]:
    """Each run's workload by run id, resolved once per distinct (spec, params, models) and shared.
    Any error is an input error naming the file: nothing has run yet."""
    cache: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for spec in specs:
        params, is_preset = _workload_args(spec)
        key = json.dumps([spec.workload_spec, params, None if is_preset else spec.models], sort_keys=True, default=str)
        if key not in cache:
            try:
                cache[key] = resolve_workload(spec, source)
            except WarmbenchError:
                raise
            except Exception as exc:  # a reader or generator choking on this input
                raise InputError(f"workload {spec.workload_spec}: {type(exc).__name__}: {exc}",
                                 file=source or None, field="workload") from None
        out[spec.run_id] = cache[key]
    return out


def execute(spec: RunSpec, run_dir: Path, code: dict[str, Any] | None = None, workload: Any = None,
            workload_hash: str | None = None) -> RunOutcome:
    """Do one run and write it; a failure is recorded in the manifest, never raised. `workload_hash`:
    the grid's workload_sha256 of `workload` (computed here when None). Ctrl-C
    (KeyboardInterrupt, or a live run that stopped on SIGINT) leaves it incomplete, `interrupted`."""
    started = time.time()
    try:
        archive_run(run_dir)  # an earlier incomplete or outdated attempt: kept in .history, start clean
        run_dir.mkdir(parents=True)
    except OSError as exc:  # nowhere to record it: the outcome says why
        return RunOutcome(spec, FAILED, error=f"cannot write {run_dir}: {exc}", user_error=True, mostly_failed=True)
    manifest: dict[str, Any] = {}
    try:
        if workload is None:
            workload, workload_hash = resolve_workload(spec), None
        manifest = new_manifest(kind=spec.backend, system=spec.point["system"], config=spec.config(), seed=spec.seed,
                                workload=workload, code=code if code is not None else current_code(),
                                started_at=_iso(started), experiment=spec.experiment, run_id=spec.run_id,
                                point=spec.point, workload_hash=workload_hash)
        write_manifest(run_dir, manifest)
        if spec.backend == "sim":
            result = systems.sim.simulate(workload, spec.cluster, spec.system, options=spec.options, seed=spec.seed,
                              duration_s=spec.duration_s)
        else:
            from harness.live import run_live

            result = run_live(workload, spec.system, spec.options, run_dir, seed=spec.seed)
        ended = time.time()
        interrupted = bool(result.manifest.get("interrupted"))
        status = INCOMPLETE if result.manifest.get("status") == INCOMPLETE or interrupted else COMPLETE
        result.manifest = {**result.manifest, **manifest, "status": status, "interrupted": interrupted,
                           "ended_at": _iso(ended), "wall_s": round(ended - started, 3)}
        write_run(result, run_dir)
    except KeyboardInterrupt:
        manifest.update(status=INCOMPLETE, interrupted=True, ended_at=_iso(time.time()))
        _write_best_effort(run_dir, manifest, spec)
        return RunOutcome(spec, INCOMPLETE, time.time() - started, error="interrupted", interrupted=True)
    except Exception as exc:  # recorded; the grid goes on
        manifest.update(status=FAILED, error=f"{type(exc).__name__}: {exc}", ended_at=_iso(time.time()),
                        traceback=traceback.format_exc(limit=8))
        _write_best_effort(run_dir, manifest, spec)
        return RunOutcome(spec, FAILED, time.time() - started, error=str(exc),
                          user_error=isinstance(exc, WarmbenchError), mostly_failed=True)
    m = result.manifest
    return RunOutcome(spec, status, ended - started, summary=read_summary(run_dir)["models"].get("all", {}),
                      interrupted=interrupted, mostly_failed=bool(m.get("mostly_failed")),
                      requests_summary=m.get("requests_summary"))


def _write_best_effort(run_dir: Path, manifest: dict[str, Any], spec: RunSpec) -> None:
    """The manifest of a run that did not complete; if even the start manifest was never built
    (the workload failed), a minimal one that still follows the schema."""
    base = {"schema_version": None, "kind": spec.backend, "backend": spec.backend, "system": spec.point["system"],
            "seed": spec.seed, "point": spec.point, "config": spec.config(), "config_sha256": spec.config_sha256(),
            "experiment": spec.experiment, "run_id": spec.run_id}
    data = {**{k: v for k, v in base.items() if v is not None}, **manifest}
    records = None
    if (run_dir / "requests.jsonl").is_file() and not (run_dir / "requests.parquet").is_file():
        from harness.contracts.result import REQUEST_COLUMNS
        from harness.store import read_jsonl

        records = read_jsonl(run_dir / "requests.jsonl", REQUEST_COLUMNS)
    try:
        write_manifest(run_dir, data, records)
    except ValueError as exc:  # a writer broke the schema: still record the outcome, and say so
        write_json(run_dir / "manifest.json", {**data, "schema_error": str(exc)[:500]})


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the grid

def run(config: ExperimentConfig, results_dir: Path, *, jobs: int | Executor = 1, source: Path | None = None,
        on_start: Callable[[RunSpec], None] = lambda s: None,
        on_done: Callable[[RunOutcome], None] = lambda o: None) -> tuple[Path, list[RunOutcome]]:
    """Run the grid into `results_dir/<name>/`, skipping runs done with the same config, workload and
    code; returns the experiment dir and outcomes. `jobs`: local worker processes, or an executor
    (harness.executors.RayPool) to run them on. Ctrl-C raises GridInterrupted (the run going on
    is left incomplete, the rest not started)."""
    specs = grid(config)
    src = config._source or str(source or "")
    exp_dir = Path(results_dir) / config.name
    code = current_code()
    workloads_by_id = resolve_workloads(specs, src)  # every input error before anything runs or moves
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
        write_experiment_file(exp_dir, config, source, {s.run_id: s.point for s in specs})
    except OSError as exc:
        raise InputError(f"cannot write the results there: {exc.strerror or exc}", file=str(exp_dir),
                         field="--results") from None
    with _exclusive(exp_dir):
        return _run_grid(specs, exp_dir, code, workloads_by_id, config.backend, jobs, on_start, on_done)


def write_experiment_file(exp_dir: Path, config: ExperimentConfig, source: Path | str | None,
                          points: dict[str, dict[str, Any]]) -> None:
    """experiment.json: the config, its source, and the grid's runs (in order) with their points."""
    write_json(exp_dir / EXPERIMENT_FILE, {"config": config.model_dump(), "source": str(source or ""),
                                           "runs": list(points), "points": points})


@contextlib.contextmanager
def _exclusive(exp_dir: Path) -> Iterator[None]:
    """One `run` at a time per experiment folder: two would move and overwrite each other's runs."""
    with open(exp_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise WarmbenchError(f"{exp_dir} is being written by another `run` (pid {holder}); "
                                 "wait for it or use another --results") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield


def _run_grid(specs: list[RunSpec], exp_dir: Path, code: dict[str, Any], workloads_by_id: dict[str, Any],
              backend: str, jobs: int | Executor, on_start: Callable[[RunSpec], None],
              on_done: Callable[[RunOutcome], None]) -> tuple[Path, list[RunOutcome]]:
    """`jobs`: how many local worker processes (1: in this process), or the executor to run on."""
    outcomes: list[RunOutcome] = []
    todo = []
    hashes: dict[int, str] = {}  # per workload object: runs share them
    digests: dict[str, str] = {}  # per run id, handed to the manifest (hashed once)
    for spec in specs:
        workload = workloads_by_id[spec.run_id]
        digest = digests[spec.run_id] = (hashes.get(id(workload))
                                         or hashes.setdefault(id(workload), workload_sha256(workload)))
        manifest = done_manifest(spec, exp_dir / spec.run_id, code, digest)
        if manifest is not None:
            outcomes.append(_skipped(spec, exp_dir / spec.run_id, manifest))
            on_done(outcomes[-1])
        else:
            todo.append(spec)
    if backend == "live" or isinstance(jobs, int) and (jobs <= 1 or len(todo) <= 1):  # live runs would disturb each other
        for i, spec in enumerate(todo):
            on_start(spec)
            try:
                outcome = execute(spec, exp_dir / spec.run_id, code, workloads_by_id[spec.run_id],
                                  digests[spec.run_id])
            except KeyboardInterrupt:  # a second Ctrl-C while the run was being recorded
                outcome = RunOutcome(spec, INCOMPLETE, error="interrupted", interrupted=True)
            outcomes.append(outcome)
            on_done(outcome)
            if outcome.interrupted:
                raise GridInterrupted(exp_dir, _ordered(outcomes, specs), todo[i + 1:])
    else:
        from harness.executors import LocalPool

        pool = LocalPool(jobs) if isinstance(jobs, int) else jobs
        _run_pool(todo, exp_dir, code, workloads_by_id, digests, pool, outcomes, on_start, on_done, specs)
    return exp_dir, _ordered(outcomes, specs)


def _skipped(spec: RunSpec, run_dir: Path, manifest: dict[str, Any]) -> RunOutcome:
    return RunOutcome(spec, "skipped", summary=read_summary(run_dir)["models"].get("all", {}),
                      mostly_failed=bool(manifest.get("mostly_failed")),
                      requests_summary=manifest.get("requests_summary"))


def _ordered(outcomes: list[RunOutcome], specs: list[RunSpec]) -> list[RunOutcome]:
    order = {s.run_id: i for i, s in enumerate(specs)}
    return sorted(outcomes, key=lambda o: order[o.spec.run_id])


def _run_pool(todo: list[RunSpec], exp_dir: Path, code: dict[str, Any], workloads_by_id: dict[str, Any],
              digests: dict[str, str], pool: Executor,
              outcomes: list[RunOutcome], on_start: Callable[[RunSpec], None], on_done: Callable[[RunOutcome], None],
              specs: list[RunSpec]) -> None:
    """Runs on `pool` (local worker processes or Ray tasks, see harness.executors), submitted as
    slots free up (so "running" is true)."""
    slots = pool.open(len(todo))
    queue = list(todo)
    running: dict[Any, RunSpec] = {}  # executor handle -> its run
    try:
        while queue or running:
            while queue and len(running) < slots:
                spec = queue.pop(0)
                running[pool.submit(spec, exp_dir / spec.run_id, code, workloads_by_id[spec.run_id],
                                    digests[spec.run_id])] = spec
                on_start(spec)
            for handle in pool.wait(list(running)):
                spec = running.pop(handle)
                outcome = pool.outcome(handle, spec, exp_dir / spec.run_id)
                outcomes.append(outcome)
                on_done(outcome)
                if outcome.interrupted:  # a worker got the Ctrl-C first
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        _stop(pool, running, exp_dir, outcomes, on_done)
        started = {o.spec.run_id for o in outcomes}
        raise GridInterrupted(exp_dir, _ordered(outcomes, specs), [s for s in todo if s.run_id not in started]) from None
    except BaseException:
        _stop(pool, running, exp_dir, outcomes, lambda o: None)
        raise
    pool.close()


def _stop(pool: Executor, running: dict[Any, RunSpec], exp_dir: Path, outcomes: list[RunOutcome],
          on_done: Callable[[RunOutcome], None]) -> None:
    """Interrupt the runs in flight (each records itself incomplete) and drop queued ones."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # further Ctrl-C: we are stopping already
    try:
        for outcome in pool.stop(running, exp_dir):
            outcomes.append(outcome)
            on_done(outcome)
        running.clear()
    finally:
        signal.signal(signal.SIGINT, previous)
