"""Where a grid's runs execute: `LocalPool` (worker processes on this machine, the default) or
`RayPool` (Ray tasks, on a local Ray or a cluster). Both give the grid loop in
`harness.runner` the same four steps (open / submit / wait / outcome, and stop on Ctrl-C), so
progress, resume, failure records and interrupts behave the same whichever runs the work.

Ray runs ship their files back: a task does the run with the same `runner.execute` into a
temporary folder on its node and returns the folder's files (manifest, summary, the Parquet
tables) as bytes; the driver archives the older attempt and places them under
`results/<exp>/<run-id>/`. Why not let workers write to the results folder: a real cluster's nodes
do not share the driver's disk, and this way the records are the very bytes `store.write_run`
wrote, whichever node ran them. Ray is an optional extra (`pip install 'warmbench[ray]'`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

from harness import runner
from harness.contracts.errors import WarmbenchError
from harness.experiment import RunSpec
from harness.store import FAILED, INCOMPLETE, archive_run

#: After Ctrl-C, how long the grid waits for runs in flight to record themselves incomplete.
STOP_GRACE_S = 10.0


class Executor(Protocol):
    """What the grid loop needs from whatever runs the runs."""

    def open(self, runs: int) -> int:
        """Get ready for `runs` runs; returns how many may be in flight at once."""

    def submit(self, spec: RunSpec, run_dir: Path, code: dict[str, Any], workload: Any,
               workload_hash: str) -> Any:
        """Start one run; returns a handle for `wait` / `outcome`."""

    def wait(self, handles: list[Any]) -> list[Any]:
        """Block until at least one handle is done; returns the done ones."""

    def outcome(self, handle: Any, spec: RunSpec, run_dir: Path) -> runner.RunOutcome:
        """The finished run's outcome, its files in `run_dir`."""

    def stop(self, running: dict[Any, RunSpec], exp_dir: Path) -> list[runner.RunOutcome]:
        """Interrupt the runs in flight and drop queued ones; the outcomes of those that had started."""

    def close(self) -> None:
        """The grid is done (every handle collected)."""


# ---------------------------------------------------------------- local processes

#: prctl(2) option: the signal a process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1

#: Set in a pool worker while it does a run: Ctrl-C outside a run is ignored there (the parent stops the pool).
_IN_RUN = threading.Event()


def _worker_init(parent_pid: int) -> None:
    """Runs in each pool worker: die with the parent (even on SIGKILL of it), and take one Ctrl-C
    during a run (it marks that run incomplete), ignoring any after it so the manifest gets written."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog below still covers it
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watchdog() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watchdog, name="die-with-parent", daemon=True).start()

    def interrupt_once(signum: int, frame: Any) -> None:
        if _IN_RUN.is_set():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt_once)


def _execute_in_worker(spec: RunSpec, run_dir: str, code: dict[str, Any], workload: Any,
                       workload_hash: str) -> runner.RunOutcome:
    _IN_RUN.set()
    try:
        return runner.execute(spec, Path(run_dir), code, workload, workload_hash)
    finally:
        _IN_RUN.clear()


class LocalPool:
    """Runs in worker processes of this machine, each writing its run folder itself."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def open(self, runs: int) -> int:
        # never more workers than runs or than 4 per CPU: `--jobs 100000` forked 100000 processes at once
        slots = max(1, min(self.jobs, runs, 4 * (os.cpu_count() or 1)))
        self._pool = ProcessPoolExecutor(max_workers=slots, initializer=_worker_init, initargs=(os.getpid(),))
        return slots

    def submit(self, spec: RunSpec, run_dir: Path, code: dict[str, Any], workload: Any,
               workload_hash: str) -> Any:
        assert self._pool is not None
        return self._pool.submit(_execute_in_worker, spec, str(run_dir), code, workload, workload_hash)

    def wait(self, handles: list[Any]) -> list[Any]:
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        return list(done)

    def outcome(self, handle: Any, spec: RunSpec, run_dir: Path) -> runner.RunOutcome:
        return handle.result()

    def stop(self, running: dict[Any, RunSpec], exp_dir: Path) -> list[runner.RunOutcome]:
        """SIGINT to every worker (each records its run incomplete), then kill what is left."""
        assert self._pool is not None
        pool, outcomes = self._pool, []
        pool.shutdown(wait=False, cancel_futures=True)
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for proc in processes:
            try:
                os.kill(proc.pid, signal.SIGINT)
            except (OSError, TypeError):
                pass
        done, _ = wait(running, timeout=STOP_GRACE_S)
        for future, spec in running.items():
            if future.cancelled():  # never reached a worker: not started
                continue
            try:
                outcome = future.result(timeout=0) if future in done else None
            except BaseException:  # noqa: BLE001 - a worker that died: its manifest says incomplete
                outcome = None
            outcomes.append(outcome or runner.RunOutcome(spec, INCOMPLETE, error="interrupted", interrupted=True))
        for proc in processes:
            if proc.is_alive():
                proc.kill()
        return outcomes

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


# ---------------------------------------------------------------- Ray

RAY_MISSING = "--executor ray needs Ray, an optional extra: pip install 'warmbench[ray]'"


def import_ray() -> Any:
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise WarmbenchError(RAY_MISSING) from None
    return ray


def run_and_ship(spec: RunSpec, code: dict[str, Any], workload: Any,
                 workload_hash: str) -> tuple[runner.RunOutcome, dict[str, bytes]]:
    """The Ray task: `runner.execute` into a temporary folder on this node, then its files
    (relative path -> bytes) for the driver to place. Failures are recorded by `execute` itself."""
    with tempfile.TemporaryDirectory(prefix="warmbench-run-") as tmp:
        run_dir = Path(tmp) / spec.run_id
        outcome = runner.execute(spec, run_dir, code, workload, workload_hash)
        files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    return outcome, files


def place_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Put a shipped run in place: the older attempt goes to `.history` (as `execute` does), the
    manifest is written last so a crash midway never leaves a folder that looks like a run."""
    archive_run(run_dir)
    run_dir.mkdir(parents=True)
    for rel in sorted(files, key=lambda r: r == "manifest.json"):
        path = run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(files[rel])
        tmp.replace(path)


class RayPool:
    """Runs as Ray tasks (one CPU each); their files come back to this process (see the module doc).
    Use inside `ray_session`, which starts and ends Ray."""

    def __init__(self, ray: Any, jobs: int | None = None) -> None:
        self.ray, self.jobs = ray, jobs
        self._task = ray.remote(num_cpus=1, max_retries=0)(run_and_ship)  # a lost run is redone by resume
        self._shared: dict[int, Any] = {}  # id(workload) -> its object ref: put once, shared by its runs

    def open(self, runs: int) -> int:
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        return max(1, min(self.jobs or cpus, runs))

    def submit(self, spec: RunSpec, run_dir: Path, code: dict[str, Any], workload: Any,
               workload_hash: str) -> Any:
        if id(workload) not in self._shared:
            self._shared[id(workload)] = (self.ray.put(workload), workload)  # keep it alive: ids are reused
        return self._task.remote(spec, code, self._shared[id(workload)][0], workload_hash)

    def wait(self, handles: list[Any]) -> list[Any]:
        done, _ = self.ray.wait(handles, num_returns=1)
        return done

    def outcome(self, handle: Any, spec: RunSpec, run_dir: Path) -> runner.RunOutcome:
        """Place the shipped files; a task that raised or whose worker died becomes a failed record."""
        try:
            outcome, files = self.ray.get(handle)
        except self.ray.exceptions.RayError as exc:
            return failed_record(spec, run_dir, _task_error(exc))
        try:
            place_files(run_dir, files)
        except OSError as exc:
            return runner.RunOutcome(spec, FAILED, outcome.wall_s, error=f"cannot write {run_dir}: {exc}",
                                 user_error=True, mostly_failed=True)
        return outcome

    def stop(self, running: dict[Any, RunSpec], exp_dir: Path) -> list[runner.RunOutcome]:
        """Cancel every task (a running one gets KeyboardInterrupt: `execute` records it incomplete
        and it still ships its files); wait STOP_GRACE_S for them. A run that sent nothing back
        leaves its folder as it was and is reported incomplete."""
        if not running:
            return []
        for ref in running:
            self.ray.cancel(ref)
        outcomes = []
        done, _ = self.ray.wait(list(running), num_returns=len(running), timeout=STOP_GRACE_S)
        for ref, spec in running.items():
            outcome = None
            if ref in done:
                try:
                    outcome, files = self.ray.get(ref, timeout=0)
                    place_files(exp_dir / spec.run_id, files)
                except self.ray.exceptions.TaskCancelledError:
                    continue  # cancelled before it started
                except (self.ray.exceptions.RayError, OSError):
                    outcome = None
            outcomes.append(outcome or runner.RunOutcome(spec, INCOMPLETE, error="interrupted", interrupted=True))
        return outcomes

    def close(self) -> None:
        self._shared.clear()


def _task_error(exc: Exception) -> str:
    """The task's own exception when it raised one (RayTaskError wraps it), else Ray's reason."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def failed_record(spec: RunSpec, run_dir: Path, error: str) -> runner.RunOutcome:
    """A run whose task raised outside `execute` (its worker died, its arguments could not be
    sent): recorded failed in `run_dir` by the driver, as `execute` records a run that raised."""
    try:
        archive_run(run_dir)
        run_dir.mkdir(parents=True)
        runner.write_best_effort(run_dir, {"status": FAILED, "error": error, "ended_at": runner.iso_utc(time.time())}, spec)
    except OSError as exc:
        error = f"{error}; and cannot write {run_dir}: {exc}"
    return runner.RunOutcome(spec, FAILED, error=error, mostly_failed=True)


@contextlib.contextmanager
def ray_session(address: str | None = None, jobs: int | None = None) -> Iterator[RayPool]:
    """Start Ray (a local one with `jobs` CPUs when `address` is None, else join the cluster at
    `address`, shipping this checkout's packages so its nodes run this code), yield a RayPool,
    and shut Ray down however the block ends."""
    ray = import_ray()
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            import harness
            import systems
            import workloads

            modules = []
            for package in (harness, systems, workloads):
                assert package.__file__ is not None  # regular packages: an __init__.py each
                modules.append(str(Path(package.__file__).parent))
            ray.init(address=address, runtime_env={"py_modules": modules}, **options)
        else:
            ray.init(num_cpus=jobs, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:  # no cluster there, bad address
        with contextlib.suppress(Exception):
            ray.shutdown()
        where = f"at {address}" if address else "locally"
        raise WarmbenchError(f"--executor ray: cannot start Ray {where}: {str(exc).splitlines()[0]}") from None
    try:
        yield RayPool(ray, jobs)
    finally:
        ray.shutdown()
