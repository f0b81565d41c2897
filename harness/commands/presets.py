"""`warmbench presets`: the experiments, workloads, clusters and systems that ship with warmbench."""

from __future__ import annotations

import argparse
import tomllib

from rich.console import Console
from rich.table import Table

from harness import experiment


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("presets", help="list experiment, workload and cluster presets and simulated systems")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    console = Console()
    table = Table(title="experiment presets (python run.py run NAME)", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name in experiment.preset_names():
        raw = tomllib.loads(experiment.preset_path(name).read_text())
        table.add_row(name, raw.get("description", ""))
    console.print(table)
    for title, names in (("workload presets", _workloads()), ("cluster presets", _clusters()),
                         ("simulated systems", _systems())):
        console.print(f"[bold]{title}:[/] {', '.join(names) if names else '(none yet)'}", highlight=False)
    return 0


def _workloads() -> list[str]:
    try:
        from workloads import PRESETS
    except ImportError:
        return []
    return list(PRESETS)


def _clusters() -> list[str]:
    try:
        from systems.sim import specs
    except ImportError:
        return []
    names = getattr(specs, "CLUSTERS", None) or getattr(specs, "CLUSTER_PRESETS", None) or {}
    return sorted(names)


def _systems() -> list[str]:
    try:
        return experiment.registered_systems()
    except ImportError:
        return []
