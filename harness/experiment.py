"""Experiments: a TOML file -> a validated config -> a grid of runs -> `results/<experiment>/<run-id>/`.

Any list-valued field is a sweep axis (the `systems` list, `seeds`, `cluster`, `duration_s`, each
value in `workload.params`, in `options` and in a system's own `options`); the grid is their
product. To pass a list as one value, wrap it: `[[a, b]]` (except LIST_VALUED names such as
`models` and `extra_args`, whose plain list is one value). Runs are independent, so the grid runs
in a process pool; a run already complete with the same config and code revision is skipped (resume).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import shutil
import time
import tomllib
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator

from harness.errors import InputError, WarmbenchError
from harness.report.load import EXPERIMENT_FILE
from harness.store import COMPLETE, INCOMPLETE, environment, git_revision, read_summary, write_json, write_run

#: Experiment presets shipped in the package.
PRESET_DIR = Path(__file__).parent / "experiments"
DEFAULT_PRESET = "default"
DEFAULT_RESULTS = Path("results")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    def config(self) -> dict[str, Any]:
        return asdict(self)

    def config_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode()).hexdigest()


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
    try:
        raw = tomllib.loads(path.read_text())
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
    from systems.sim import registry

    return list(registry.names())


#: Parameters whose value is a list by nature: a list there is one value, not a sweep axis
#: (sweep them with a list of lists).
LIST_VALUED: frozenset[str] = frozenset({"models", "extra_args"})


def _axes(values: dict[str, Any], prefix: str) -> list[tuple[str, list[Any]]]:
    return [(f"{prefix}{k}", list(v)) for k, v in values.items()
            if isinstance(v, list) and (k not in LIST_VALUED or all(isinstance(x, list) for x in v))]


def grid(config: ExperimentConfig) -> list[RunSpec]:
    """Every run of the experiment, in order: systems outermost, then the other axes, seeds innermost."""
    entries = [SystemConfig(name=s) if isinstance(s, str) else s for s in
               ([*registered_systems()] if config.systems == "all" else config.systems)]
    labels = [e.label or e.name for e in entries]
    if len(set(labels)) != len(labels):
        raise WarmbenchError(f"systems appear twice {labels}; give each entry a distinct `label`")
    if config.baseline is not None and config.baseline not in labels:
        raise WarmbenchError(f"baseline {config.baseline!r} is not one of the systems {labels}")
    shared_axes = [("cluster", config.cluster if isinstance(config.cluster, list) else [config.cluster]),
                   ("duration_s", config.duration_s if isinstance(config.duration_s, list) else [config.duration_s]),
                   *_axes(config.workload.params, "workload."), *_axes(config.options, "options.")]
    specs = []
    for entry, label in zip(entries, labels):
        axes = shared_axes + _axes(entry.options, "system_options.")
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
                cluster=at["cluster"], system=entry.name, options=options, workload_spec=config.workload.spec,
                workload_params=params, models=config.models, seed=seed, duration_s=at["duration_s"],
                slo=config.slo.model_dump()))
    return specs


def _short_names(names: list[str]) -> dict[str, str]:
    last = [n.rsplit(".", 1)[-1] for n in names]
    return {n: (s if last.count(s) == 1 else n) for n, s in zip(names, last)}


def run_id(point: dict[str, Any]) -> str:
    """Readable, filesystem-safe: `warmserve_total_rps-5_seed-0`."""
    parts = [str(point["system"])] + [f"{k}-{_fmt(v)}" for k, v in point.items() if k != "system"]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts))


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- running

@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # complete | incomplete | skipped | failed
    wall_s: float = 0.0
    error: str = ""
    user_error: bool = False
    summary: dict[str, Any] = field(default_factory=dict)


def current_git() -> dict[str, Any]:
    """The checkout's git commit and dirtiness ({} outside git): results are only reused for the same code."""
    return git_revision(Path(__file__).resolve().parents[1])


def is_done(spec: RunSpec, run_dir: Path, revision: str | None = None) -> bool:
    """Complete, with the same config and the same code revision: safe to skip."""
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    return (data.get("status") == COMPLETE and data.get("config_sha256") == spec.config_sha256()
            and (data.get("git") or {}).get("revision") == revision and (run_dir / "requests.parquet").is_file())


def resolve_workload(spec: RunSpec):
    """The run's workload: a preset gets the experiment's models and the run's seed (so `seeds`
    gives independent draws of the workload, unless `workload.params.seed` pins one); a trace is
    filtered to the models."""
    import workloads

    params = dict(spec.workload_params)
    is_preset = spec.workload_spec in workloads.PRESETS
    if spec.models and is_preset:
        params.setdefault("models", list(spec.models))
    if is_preset:
        params.setdefault("seed", spec.seed)
    workload = workloads.resolve(spec.workload_spec, **params)
    if spec.models and not is_preset:
        keep = workload.requests["model"].isin(spec.models)
        workload = workloads.Workload(workload.requests[keep].reset_index(drop=True),
                                      {**workload.meta, "filtered_to_models": list(spec.models)}, workload.history)
    return workload


def workload_sha256(requests: pd.DataFrame) -> str:
    """Hash of the request table itself: equal inputs, equal hash (whatever the source)."""
    hashed = pd.util.hash_pandas_object(requests, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def execute(spec: RunSpec, run_dir: Path) -> RunOutcome:
    """Do one run and write it; a failure is recorded in the manifest, never raised."""
    started = time.time()
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an earlier incomplete or outdated attempt: start clean
    run_dir.mkdir(parents=True)
    manifest: dict[str, Any] = {
        "experiment": spec.experiment, "run_id": spec.run_id, "point": spec.point, "system": spec.point["system"],
        "backend": spec.backend, "seed": spec.seed, "config": spec.config(), "config_sha256": spec.config_sha256(),
        "started_at": _iso(started), "status": INCOMPLETE, **environment(), "git": current_git(),
    }
    write_json(run_dir / "manifest.json", manifest)
    try:
        workload = resolve_workload(spec)
        manifest.update(workload=workload.meta, trace_sha256=workload.meta.get("sha256"),
                        workload_sha256=workload_sha256(workload.requests), workload_requests=len(workload))
        write_json(run_dir / "manifest.json", manifest)
        if spec.backend == "sim":
            from systems.sim import simulate

            result = simulate(workload, spec.cluster, spec.system, options=spec.options, seed=spec.seed,
                              duration_s=spec.duration_s)
        else:
            from systems.live import run_live

            result = run_live(workload, spec.system, spec.options, run_dir, seed=spec.seed)
    except Exception as exc:  # recorded; the grid goes on
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}", ended_at=_iso(time.time()),
                        traceback=traceback.format_exc(limit=8))
        write_json(run_dir / "manifest.json", manifest)
        return RunOutcome(spec, "failed", time.time() - started, error=str(exc),
                          user_error=isinstance(exc, WarmbenchError))
    ended = time.time()
    status = INCOMPLETE if result.manifest.get("status") == INCOMPLETE else COMPLETE  # a live run stopped early
    result.manifest = {**result.manifest, **manifest, "status": status, "ended_at": _iso(ended),
                       "wall_s": round(ended - started, 3)}
    write_run(result, run_dir)
    return RunOutcome(spec, status, ended - started, summary=read_summary(run_dir)["models"].get("all", {}))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")


def _execute_in_worker(spec: RunSpec, run_dir: str) -> RunOutcome:
    return execute(spec, Path(run_dir))


def run(config: ExperimentConfig, results_dir: Path, *, jobs: int = 1, source: Path | None = None,
        on_start: Callable[[RunSpec], None] = lambda s: None,
        on_done: Callable[[RunOutcome], None] = lambda o: None) -> tuple[Path, list[RunOutcome]]:
    """Run the grid into `results_dir/<name>/`, skipping complete runs; returns the experiment dir and outcomes."""
    specs = grid(config)
    exp_dir = Path(results_dir) / config.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_json(exp_dir / EXPERIMENT_FILE, {"config": config.model_dump(), "source": str(source or ""),
                                           "runs": [s.run_id for s in specs],
                                           "points": {s.run_id: s.point for s in specs}})
    outcomes: list[RunOutcome] = []
    todo = []
    revision = current_git().get("revision")
    for spec in specs:
        if is_done(spec, exp_dir / spec.run_id, revision):
            outcome = RunOutcome(spec, "skipped", summary=read_summary(exp_dir / spec.run_id)["models"].get("all", {}))
            outcomes.append(outcome)
            on_done(outcome)
        else:
            todo.append(spec)
    if jobs <= 1 or len(todo) <= 1 or config.backend == "live":  # live runs would disturb each other
        for spec in todo:
            on_start(spec)
            outcome = execute(spec, exp_dir / spec.run_id)
            outcomes.append(outcome)
            on_done(outcome)
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        try:
            queue, running = list(todo), set()
            while queue or running:
                while queue and len(running) < jobs:  # submit as workers free up: "running" is true
                    spec = queue.pop(0)
                    running.add(pool.submit(_execute_in_worker, spec, str(exp_dir / spec.run_id)))
                    on_start(spec)
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    outcomes.append(outcome)
                    on_done(outcome)
        except BaseException:  # Ctrl-C: drop queued runs; interrupted ones keep status incomplete
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    order = {s.run_id: i for i, s in enumerate(specs)}
    outcomes.sort(key=lambda o: order[o.spec.run_id])
    return exp_dir, outcomes
