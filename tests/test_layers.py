"""The import-linter contracts in pyproject.toml name every module of harness/ but the contracts:
a module added to harness/ and left out of the lists would be importable from systems/ and
workloads/ without lint-imports noticing."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def _harness_modules() -> set[str]:
    out = set()
    for path in (ROOT / "harness").iterdir():
        if path.name.startswith(("_", ".")) or path.name == "contracts":
            continue
        if path.suffix == ".py" or (path / "__init__.py").exists():
            out.add(f"harness.{path.stem}")
    return out


def test_the_forbidden_lists_name_every_harness_module_but_the_contracts() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["name"]: c for c in config["contracts"]}
    outside = contracts["systems and workloads import only harness.contracts of the harness"]
    inside = contracts["harness.contracts imports nothing of the project outside itself"]
    modules = _harness_modules()
    assert "harness.live" in modules and "harness.contracts" not in modules
    assert set(outside["forbidden_modules"]) == modules
    assert set(inside["forbidden_modules"]) == modules | {"systems", "workloads"}
    assert outside["allow_indirect_imports"] is False and inside["allow_indirect_imports"] is False
