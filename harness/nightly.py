"""The nightly recipe's choices no other command makes: which runs are "the previous revision",
and the gate's default bounds (DEFAULT_BOUNDS, also what `bench gate` measures).

`run` keeps an experiment's results by revision: the current runs in `<exp>/<run-id>/`, and every
run that newer code replaced in `<exp>/.history/<code-key>/<run-id>[-N]/` (harness.store). The
previous revision is the newest code key under `.history/` other than the current runs' own whose
complete runs exist, newest by the earliest `started_at` of its runs (the order `history` shows).
Only complete runs count (a night whose runs failed or were cut is no reference); of one run id
archived twice with that code, the later complete one. `gather` copies them into a folder that
`compare` reads as the base.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.identity import code_key
from harness.store import COMPLETE, HISTORY_DIR

#: The gate's bounds unless --fail-if is given: P99 TTFT up 10%, SLO attainment down 2 points of
#: its value, goodput down 5% (the bounds of the nightly recipe the README has shown since its start).
DEFAULT_BOUNDS: tuple[str, ...] = ("p99_ttft_s:+10%", "slo_attainment:-2%", "goodput_rps:-5%")


@dataclass(frozen=True)
class Revision:
    """One code identity's complete runs of an experiment: one folder per run id."""

    key: str
    started_at: str
    runs: dict[str, Path]


def _manifest(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None  # unreadable: not a reference to gate against
    return data if isinstance(data, dict) else None


def current_keys(exp_dir: Path) -> set[str]:
    """Code keys of the experiment's current runs (normally one: the code that just ran)."""
    keys = set()
    for manifest_path in exp_dir.glob("*/manifest.json"):
        data = _manifest(manifest_path.parent)
        if data is not None and isinstance(data.get("code"), dict):
            keys.add(code_key(data["code"]))
    return keys


def archived_revisions(exp_dir: Path) -> list[Revision]:
    """The revisions under `<exp>/.history/` with at least one complete run, oldest first."""
    out = []
    for folder in sorted(p for p in (exp_dir / HISTORY_DIR).glob("*") if p.is_dir()):
        best: dict[str, tuple[str, Path]] = {}
        for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            data = _manifest(run_dir)
            if data is None or data.get("status") != COMPLETE or not isinstance(data.get("run_id"), str):
                continue
            started = str(data.get("started_at") or "")
            if data["run_id"] not in best or started >= best[data["run_id"]][0]:
                best[data["run_id"]] = (started, run_dir)
        if best:
            first = min(started for started, _ in best.values())
            out.append(Revision(folder.name, first, {run_id: path for run_id, (_, path) in sorted(best.items())}))
    return sorted(out, key=lambda r: (r.started_at, r.key))


def previous_revision(exp_dir: Path) -> Revision | None:
    """The newest archived revision that is not the current runs' code, or None (a first night)."""
    mine = current_keys(exp_dir)
    older = [r for r in archived_revisions(exp_dir) if r.key not in mine]
    return older[-1] if older else None


def gather(revision: Revision, dest: Path) -> Path:
    """Copy the revision's runs into `dest/<run-id>/` (a folder `compare` reads as one side)."""
    dest.mkdir(parents=True, exist_ok=True)
    for run_id, run_dir in revision.runs.items():
        shutil.copytree(run_dir, dest / run_id)
    return dest
