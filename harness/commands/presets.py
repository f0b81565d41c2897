"""`warmbench presets`: the experiments, workloads, clusters and systems that ship with warmbench."""

from __future__ import annotations

import argparse
import tomllib

from rich.console import Console
from rich.table import Table

from harness import experiment


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("presets", help="list experiment, workload and cluster presets, simulated systems "
                                              "and their options")
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
    console.print(_options_table())
    return 0


def _options_table() -> Table:
    """Every simulated system's options, read from their models: the core's (any system), then each
    system's own; a system whose model extends another's lists only the defaults it changes."""
    from harness.contracts.options import describe
    from systems.sim import CoreOptions, registry
    from systems.sim.options import SimOptions

    table = Table(title="simulator options (sim --option NAME=VALUE; `options` in an experiment)",
                  title_justify="left")
    for column in ("system", "option", "default", "accepts", "what"):
        table.add_column(column, style="bold" if column == "option" else None, overflow="fold")
    models = {name: registry.options_model(name) for name in registry.names()}
    entries: list[tuple[str, type[SimOptions]]] = [("(any)", CoreOptions), *models.items()]
    for system, model in entries:
        parent = next((other for other, base in models.items() if base is not model and issubclass(model, base)), None)
        label = f"{system} (as {parent})" if parent else system
        for name, field in model.model_fields.items():
            if parent and field.default == models[parent].model_fields[name].default:
                continue
            default = "auto" if field.default is None else str(field.default).lower() if isinstance(
                field.default, bool) else f"{field.default:g}" if isinstance(field.default, float) else str(field.default)
            table.add_row(label, name, default, describe(field), _first_sentence(field.description or ""))
            label = ""
        if not model.model_fields:
            table.add_row(system, "(none)", "", "", "")
    return table


def _first_sentence(text: str) -> str:
    """Up to the first ". " or "; " outside parentheses."""
    text, depth = " ".join(text.split()), 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if depth == 0 and char in ".;" and text[i + 1:i + 2] == " ":
            return text[:i]
    return text.rstrip(".")


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
