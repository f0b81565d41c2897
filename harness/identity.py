"""What makes two runs the same run: the code that ran and the requests it replayed.

Resume reuses a run only when both match (and the config does), so these hashes decide whether a
result is stale. One function each, used by every kind of run (sim, live, experiment).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.contracts.redact import redact

#: The repository (or installed package) root: harness/, systems/, workloads/ live below it.
ROOT = Path(__file__).resolve().parents[1]
#: Where the code that produces results lives; changes elsewhere (tests, README) do not make a run stale.
SOURCE_PATHS: tuple[str, ...] = ("harness", "systems", "workloads", "run.py", "pyproject.toml")
SOURCE_SUFFIXES: tuple[str, ...] = (".py", ".toml")


def _git(root: Path, *args: str) -> bytes | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def code_identity(root: Path | None = None) -> dict[str, Any]:
    """`{revision, dirty, diff_sha256}` of the code at `root`.

    In git: the commit, and a hash of uncommitted changes to tracked source files (`git diff HEAD`)
    plus the contents of untracked .py / .toml files under the source folders (None when clean).
    Outside git: no revision, and `diff_sha256` hashes every source file, so edits still show.
    """
    root = Path(root or ROOT)
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return {"revision": None, "dirty": None, "diff_sha256": _files_sha256(root, _source_files(root))}
    diff = _git(root, "diff", "HEAD", "--binary", "--no-ext-diff", "--", *SOURCE_PATHS) or b""
    listed = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", *SOURCE_PATHS) or b""
    untracked = sorted(p for p in listed.decode(errors="replace").split("\0") if p.endswith(SOURCE_SUFFIXES))
    dirty = bool(diff) or bool(untracked)
    digest = None
    if dirty:
        h = hashlib.sha256(diff)
        h.update(_files_sha256(root, untracked).encode())
        digest = h.hexdigest()
    return {"revision": head.decode().strip(), "dirty": dirty, "diff_sha256": digest}


def _source_files(root: Path) -> list[str]:
    found: list[str] = []
    for name in SOURCE_PATHS:
        path = root / name
        if path.is_file():
            found.append(name)
        elif path.is_dir():
            found += [str(p.relative_to(root)) for p in path.rglob("*")
                      if p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts and p.is_file()]
    return sorted(found)


def _files_sha256(root: Path, names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0")
        try:
            h.update((root / name).read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return h.hexdigest()


def code_key(code: dict[str, Any] | None) -> str:
    """A folder name for a code identity: `<commit12>`, `<commit12>+<diff12>` when dirty, else `unknown`."""
    code = code or {}
    revision, diff = code.get("revision"), code.get("diff_sha256")
    if revision:
        return f"{str(revision)[:12]}+{str(diff)[:12]}" if diff else str(revision)[:12]
    return f"src-{str(diff)[:12]}" if diff else "unknown"


def config_sha256(config: Any) -> str:
    """Hash of a resolved config (JSON with sorted keys), credentials masked first.

    A credential is not part of what a run is (a rotated API key does not make results stale), and
    a hash of a short secret could be brute-forced from the manifest.
    """
    return hashlib.sha256(json.dumps(redact(config), sort_keys=True, default=str).encode()).hexdigest()


def workload_sha256(workload: Any) -> str:
    """Hash of the requests a run replays (and the load history forecasters see, when there is one).

    Takes a Workload or a bare request table. Every column counts, in name order, with values in a
    fixed byte form (int64 / float64 / UTF-8 text), so the hash does not depend on the pandas
    version or on how the table was read: equal requests, equal hash.
    """
    frames = [("requests", workload)] if isinstance(workload, pd.DataFrame) else [("requests", workload.requests)]
    history = getattr(workload, "history", None)
    if history is not None:
        frames.append(("history", history))
    h = hashlib.sha256()
    for name, frame in frames:
        h.update(f"{name}:{len(frame)}\0".encode())
        for col in sorted(map(str, frame.columns)):
            h.update(f"{col}\0".encode())
            h.update(_column_bytes(frame[col]))
    return h.hexdigest()


def _column_bytes(series: pd.Series) -> bytes:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
        if not series.isna().any():
            return np.ascontiguousarray(series.to_numpy(dtype=np.int64)).tobytes()
    elif pd.api.types.is_float_dtype(series):
        return np.ascontiguousarray(series.to_numpy(dtype=np.float64)).tobytes()
    return "\x1f".join(map(_text, series.tolist())).encode(errors="replace") + b"\x1e"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):  # e.g. a prompt's token ids: str() would elide the middle
        value = value.tolist()
    return json.dumps(value, default=str)
