"""Running an experiment's grid: each run done and recorded, the grid loop, and resume.

A run (`harness.experiment.RunSpec`) is done by `execute` into `results/<experiment>/<run-id>/`;
`run` does the whole grid, in a process pool or as Ray tasks (`harness.executors`). Resume: a run
is skipped only when its directory holds a complete run with the same resolved config, the same
workload (hash of the requests replayed) and the same code (commit and uncommitted changes, see
`identity.code_identity`); any other earlier attempt is moved to the experiment's `.history/` (see
`harness.store`), never deleted. Ctrl-C stops the whole grid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import systems.sim
import workloads
from harness.contracts.errors import InputError, WarmbenchError
from harness.contracts.files import write_json
from harness.experiment import ExperimentConfig, RunSpec, grid
from harness.identity import code_identity, workload_sha256
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


def workload_args(spec: RunSpec) -> tuple[dict[str, Any], bool]:
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
    params, is_preset = workload_args(spec)
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
        params, is_preset = workload_args(spec)
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
                                started_at=iso_utc(started), experiment=spec.experiment, run_id=spec.run_id,
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
                           "ended_at": iso_utc(ended), "wall_s": round(ended - started, 3)}
        write_run(result, run_dir)
    except KeyboardInterrupt:
        manifest.update(status=INCOMPLETE, interrupted=True, ended_at=iso_utc(time.time()))
        write_best_effort(run_dir, manifest, spec)
        return RunOutcome(spec, INCOMPLETE, time.time() - started, error="interrupted", interrupted=True)
    except Exception as exc:  # recorded; the grid goes on
        manifest.update(status=FAILED, error=f"{type(exc).__name__}: {exc}", ended_at=iso_utc(time.time()),
                        traceback=traceback.format_exc(limit=8))
        write_best_effort(run_dir, manifest, spec)
        return RunOutcome(spec, FAILED, time.time() - started, error=str(exc),
                          user_error=isinstance(exc, WarmbenchError), mostly_failed=True)
    m = result.manifest
    return RunOutcome(spec, status, ended - started, summary=read_summary(run_dir)["models"].get("all", {}),
                      interrupted=interrupted, mostly_failed=bool(m.get("mostly_failed")),
                      requests_summary=m.get("requests_summary"))


def write_best_effort(run_dir: Path, manifest: dict[str, Any], spec: RunSpec) -> None:
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


def iso_utc(t: float) -> str:
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
    with exclusive(exp_dir):
        return run_grid(specs, exp_dir, code, workloads_by_id, config.backend, jobs, on_start, on_done)


def write_experiment_file(exp_dir: Path, config: ExperimentConfig, source: Path | str | None,
                          points: dict[str, dict[str, Any]]) -> None:
    """experiment.json: the config, its source, and the grid's runs (in order) with their points."""
    write_json(exp_dir / EXPERIMENT_FILE, {"config": config.model_dump(), "source": str(source or ""),
                                           "runs": list(points), "points": points})


@contextlib.contextmanager
def exclusive(exp_dir: Path) -> Iterator[None]:
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


def run_grid(specs: list[RunSpec], exp_dir: Path, code: dict[str, Any], workloads_by_id: dict[str, Any],
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
