"""Name -> policy factory. Every module under `systems/sim/policies/` is imported once and
registers its systems with `register(name, factory)`, where `factory(options) -> Policy`.

The factory is usually the Policy subclass itself; its `OPTIONS` (name -> default) declare the
options it accepts (a factory function may carry an `OPTIONS` attribute for the same purpose).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Mapping

from harness.contracts.errors import WarmbenchError
from systems.sim.policy import Policy

Factory = Callable[[Mapping[str, Any]], Policy]

_FACTORIES: dict[str, Factory] = {}
_discovered = False


def register(name: str, factory: Factory) -> Factory:
    """Make `name` available to `simulate` and the CLI; returns the factory (usable as a decorator helper)."""
    if name in _FACTORIES and _FACTORIES[name] is not factory:
        raise ValueError(f"system {name!r} is registered twice")
    options = set(getattr(factory, "OPTIONS", {}) or {})
    bounded = set(getattr(factory, "BOUNDS", {}) or {})
    if options != bounded:  # every option declares its type and bounds (systems/sim/bounds.py)
        raise ValueError(f"system {name!r}: OPTIONS and BOUNDS differ in {sorted(options ^ bounded)}")
    _FACTORIES[name] = factory
    return factory


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
    return tuple(sorted(_FACTORIES))


def _factory(name: str) -> Factory:
    """The registered factory of system `name`; an unknown name is a user error listing the known ones."""
    discover()
    factory = _FACTORIES.get(name)
    if factory is None:
        raise WarmbenchError(f"unknown system {name!r}; registered: {', '.join(sorted(_FACTORIES)) or 'none'}")
    return factory


def create(name: str, options: Mapping[str, Any]) -> Policy:
    """Build the policy of system `name` with its options."""
    return _factory(name)(options)


def option_defaults(name: str) -> dict[str, Any]:
    """The policy's declared options (name -> default), without building it."""
    return dict(getattr(_factory(name), "OPTIONS", {}) or {})


def option_bounds(name: str) -> dict[str, Any]:
    """The policy's declared option bounds (name -> systems.sim.bounds.Bound)."""
    return dict(getattr(_factory(name), "BOUNDS", {}) or {})
