"""Name -> (policy class, options model). Every module under `systems/sim/policies/` is imported
once and registers its systems with `register(name, PolicyClass)`; the class's `Options` (a
pydantic model, systems/sim/options.py) is the one declaration of the options it takes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.contracts.errors import WarmbenchError
from systems.sim.options import CoreOptions, SimOptions
from systems.sim.policy import Policy


@dataclass(frozen=True)
class Entry:
    policy: type[Policy]
    options: type[SimOptions]


_REGISTRY: dict[str, Entry] = {}
_discovered = False


def register(name: str, policy: type[Policy]) -> type[Policy]:
    """Make `name` available to `simulate` and the CLI; returns the class."""
    new = Entry(policy, getattr(policy, "Options", None))  # type: ignore[arg-type]
    if name in _REGISTRY and _REGISTRY[name] != new:
        raise ValueError(f"system {name!r} is registered twice")
    if not (isinstance(new.options, type) and issubclass(new.options, SimOptions)):
        raise ValueError(f"system {name!r}: its Options must be a systems.sim.options.SimOptions model")
    shared = sorted(set(new.options.model_fields) & set(CoreOptions.model_fields))
    if shared:  # one value would set both: the core's and the policy's
        raise ValueError(f"system {name!r}: options {shared} are the core's (systems/sim/options.py CoreOptions)")
    stale = [attr for attr in ("OPTIONS", "BOUNDS") if hasattr(policy, attr)]
    if stale:  # the options are declared once, in the model: no second table to drift from it
        raise ValueError(f"system {name!r}: declare options in its Options model, not {', '.join(stale)}")
    _REGISTRY[name] = new
    return policy


def discover() -> None:
    """Import every module and subpackage of systems.sim.policies (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import systems.sim.policies as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def names() -> tuple[str, ...]:
    discover()
    return tuple(sorted(_REGISTRY))


def entry(name: str) -> Entry:
    """The registered entry of system `name`; an unknown name is a user error listing the known ones."""
    discover()
    found = _REGISTRY.get(name)
    if found is None:
        raise WarmbenchError(f"unknown system {name!r}; registered: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return found


def create(name: str, options: SimOptions | Mapping[str, Any] | None) -> Policy:
    """Build the policy of system `name` with its options (validated by its model if not yet)."""
    return entry(name).policy(options)


def options_model(name: str) -> type[SimOptions]:
    """The options model of system `name`: its fields, defaults and bounds, without building it."""
    return entry(name).options
