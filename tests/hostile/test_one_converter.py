"""One pydantic-to-InputError converter (issue 16, item 3): every entry point that validates user
input with pydantic (system options, live options, experiment files, preset parameters, reader
arguments, recipes, cluster TOML) says what is wrong in the same one-line format, made by
harness.contracts.options.input_error:

    [file F, field 'K': ]{what}{noun} 'K': why[ (got V)][ (and N more)]     (or: unknown {noun} 'K')

A second converter would drift from it: the format test below fails for the entry point it serves,
and the source scan fails when a module outside the allow-list handles ValidationError itself."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.contracts.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^(?:file (?P<file>[^,]+), field '(?P<field>[^']+)': )?(?P<what>.*?)"
                  r"(?:unknown (?P<unoun>option|parameter|key) '(?P<ukey>[^']+)'"
                  r"|(?P<noun>option|parameter|key) '(?P<key>[^']+)': (?P<why>.+))$")


def _sim_options(tmp_path: Path) -> None:
    from systems.sim import split_options
    split_options("warmserve", {"tick_s": 0}, file="exp.toml")


def _live_options(tmp_path: Path) -> None:
    from systems.live.registry import parse_options
    parse_options("openai", {"timeout_s": "sk-not-a-number"})


def _experiment(tmp_path: Path) -> None:
    from harness import experiment
    experiment.parse({"systems": ["dedicated"], "workload": {"spec": "synthetic-week"}, "slo": {"ttft_s": -1}},
                     tmp_path / "exp.toml")


def _preset_params(tmp_path: Path) -> None:
    from workloads.params import check_preset_params
    check_preset_params("synthetic-week", {"cv": -2})


def _reader_argument(tmp_path: Path) -> None:
    from workloads.resolve import _check_types

    def reader(path: Path, *, columns: dict[str, str] | None = None) -> None: ...
    _check_types(reader, "the table reader", {"columns": "abc"})  # type: ignore[arg-type]


def _recipe(tmp_path: Path) -> None:
    from workloads.recipe import load_recipe
    path = tmp_path / "recipe.toml"
    path.write_text('source = "synthetic-week"\n[[transforms]]\nkind = "scale_time"\nfactor = -1\n')
    load_recipe(path)


def _cluster(tmp_path: Path) -> None:
    from systems.sim.specs import load_cluster_toml
    path = tmp_path / "cluster.toml"
    path.write_text("[[nodes]]\ncount = 0\n")
    load_cluster_toml(path)


ENTRY_POINTS: dict[str, tuple[Callable[[Path], None], str, str]] = {  # name: (call, noun, key)
    "sim options": (_sim_options, "option", "tick_s"),
    "live options": (_live_options, "option", "timeout_s"),
    "experiment file": (_experiment, "key", "slo.ttft_s"),
    "preset parameters": (_preset_params, "parameter", "cv"),
    "reader arguments": (_reader_argument, "parameter", "columns"),
    "recipe": (_recipe, "key", "transforms.0.factor"),
    "cluster TOML": (_cluster, "key", "nodes.0.count"),
}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_every_entry_point_reports_in_the_one_format(tmp_path: Path, name: str) -> None:
    call, noun, key = ENTRY_POINTS[name]
    with pytest.raises(InputError) as caught:
        call(tmp_path)
    message, error = str(caught.value), caught.value
    assert len(message.splitlines()) == 1, message
    match = LINE.match(message)
    assert match, f"{name}: not the one format: {message}"
    assert (match["noun"] or match["unoun"]) == noun and (match["key"] or match["ukey"]) == key, message
    assert error.key == key, (name, error.key)
    if error.file:  # a file named: the field is the key, in the location prefix
        assert match["file"] == error.file and match["field"] == key == error.field, message
    else:
        assert match["file"] is None and error.field is None, message
    assert "sk-not-a-number" not in message  # live options never quote a value


#: Modules that handle pydantic's ValidationError themselves, and why that is not a second converter.
ALLOWED = {
    "harness/contracts/options.py": "the converter",
    "harness/store.py": "a manifest off the schema is a bug in a writer, raised as one, not user input",
    "harness/loadgen/standin_wire.py": "emulates FastAPI's 422 body for the stand-in server, not a message",
}


def test_no_second_converter() -> None:
    """Outside ALLOWED, a module that catches ValidationError hands it to input_error, and none reads
    pydantic's error list (`.errors()`) itself."""
    offenders = []
    for package in ("harness", "systems", "workloads"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "errors":
                    offenders.append(f"{rel}:{node.lineno}: .errors()")
                if isinstance(node, ast.ExceptHandler) and "ValidationError" in (ast.unparse(node.type) if node.type else ""):
                    calls = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
                    if "input_error" not in calls:
                        offenders.append(f"{rel}:{node.lineno}: except ValidationError without input_error")
    assert not offenders, ("pydantic errors turned into messages outside harness/contracts/options.py "
                           f"(use input_error): {offenders}")
    for rel in ALLOWED:
        assert (ROOT / rel).is_file(), f"ALLOWED names a module that is gone: {rel}"
