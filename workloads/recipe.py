"""Recipe TOML files for `trace make`: validated once here (pydantic), errors name the key.

    source = "synthetic-week"            # a preset, or a trace file relative to the recipe
    [source_params]                      # passed to resolve(), e.g. model = "llama-2-7b"
    [warmserve]                          # optional: the WarmServe multi-model recipe
    models = ["llama-2-7b", "llama-2-13b"]; total_rps = 5.0; alpha = 1.0; start_day = 0
    [zipf]                               # optional: split one stream over models
    models = [...]; alpha = 1.0; seed = 0
    [[transforms]]                       # optional, in order
    kind = "window"; start_s = 0; end_s = 1200    # or scale_time / resample_rate / gamma_cv / clip_lengths
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.contracts.errors import InputError
from harness.contracts.files import read_text
from harness.contracts.options import input_error
from workloads import transform
from workloads.params import MAX_SEED
from workloads.workload import Workload


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Alpha = Annotated[float, Field(ge=0, le=100)]


class WarmServeRecipe(_Strict):
    models: list[str] = Field(default_factory=lambda: ["llama-2-7b", "llama-2-7b#1", "llama-2-13b", "llama-2-70b"],
                              min_length=1)
    total_rps: float = Field(5.0, gt=0, le=1e6)
    alpha: Alpha = 1.0
    start_day: int | None = Field(None, ge=0, le=100_000)
    start_hour: float = Field(0.0, ge=0, lt=24)
    duration_s: float = Field(1200.0, gt=0, le=1e8)
    seed: Seed = 0
    history_days: int = Field(6, ge=0, le=366)
    window_s: float = Field(300.0, gt=0, le=86_400)
    cv: float | None = Field(None, gt=0, le=100)
    clip: bool = True


class ZipfRecipe(_Strict):
    models: list[str] = Field(min_length=1)
    alpha: Alpha = 1.0
    seed: Seed = 0


class WindowStep(_Strict):
    kind: Literal["window"]
    start_s: float = Field(0.0, ge=0)
    end_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> WindowStep:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s {self.end_s} must be after start_s {self.start_s}")
        return self


class ScaleStep(_Strict):
    kind: Literal["scale_time"]
    factor: float = Field(gt=0, le=1e6)


class ResampleStep(_Strict):
    kind: Literal["resample_rate"]
    target_rps: float = Field(gt=0, le=1e6)
    seed: Seed = 0


class GammaStep(_Strict):
    kind: Literal["gamma_cv"]
    cv: float = Field(gt=0, le=100)
    seed: Seed = 0


class ClipStep(_Strict):
    kind: Literal["clip_lengths"]
    max_input_tokens: int = Field(transform.MAX_INPUT_TOKENS, gt=0, le=10**9)
    min_output_tokens: int = Field(transform.MIN_OUTPUT_TOKENS, ge=0, le=10**9)
    max_output_tokens: int = Field(transform.MAX_OUTPUT_TOKENS, gt=0, le=10**9)


Step = Annotated[WindowStep | ScaleStep | ResampleStep | GammaStep | ClipStep, Field(discriminator="kind")]


class Recipe(_Strict):
    source: str
    source_params: dict[str, Any] = Field(default_factory=dict)
    warmserve: WarmServeRecipe | None = None
    zipf: ZipfRecipe | None = None
    transforms: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_mapping(self) -> Recipe:
        if self.warmserve is not None and self.zipf is not None:
            raise ValueError("use either [warmserve] or [zipf], not both")
        return self


_STEP_KINDS = {"window", "scale_time", "resample_rate", "gamma_cv", "clip_lengths"}


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate; a syntax error or a bad key is an InputError naming file and key."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such recipe file", file=str(p))
    try:
        data = tomllib.loads(read_text(p))  # BOM, non-UTF-8 and unreadable files: InputErrors
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", file=str(p)) from None
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:  # a transform step's kind is the union's tag, not a key
        raise input_error(exc, noun="key", file=str(p), skip=_STEP_KINDS) from None


def build(recipe: Recipe, base_dir: Path) -> Workload:
    """Run a validated recipe: source -> multi-model mapping -> transforms, all recorded in meta."""
    from workloads.multimodel import warmserve_recipe, zipf_models
    from workloads.resolve import PRESETS, resolve
    source: str | Path = recipe.source if recipe.source in PRESETS else base_dir / recipe.source
    workload = resolve(source, **recipe.source_params)
    if recipe.warmserve is not None:
        workload = warmserve_recipe(workload, **recipe.warmserve.model_dump())
    if recipe.zipf is not None:
        workload = zipf_models(workload, **recipe.zipf.model_dump())
    for step in recipe.transforms:
        params = step.model_dump(exclude={"kind"})
        if step.kind == "window":
            workload = transform.select_window(workload, **params)
        else:
            workload = getattr(transform, step.kind)(workload, **params)
    workload.meta["recipe_file"] = str(base_dir)
    return workload


def input_files(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[Path]:
    """Every file building the recipe reads (resolved): itself, a file source and its history, and
    what a recipe source reads in turn. A bad or looping recipe stops the walk (building it says why)."""
    from workloads.io import history_path
    from workloads.resolve import PRESETS

    p = Path(path).resolve()
    if p in _seen:
        return []
    try:
        recipe = load_recipe(p)
    except InputError:
        return [p]
    if recipe.source in PRESETS:
        return [p]
    source = (p.parent / recipe.source).resolve()
    if source.suffix.lower() == ".toml":
        return [p, *input_files(source, (*_seen, p))]
    return [p, source, history_path(source)]


#: Recipes being built, outermost first: a recipe whose source leads back to itself is an error.
_BUILDING: list[Path] = []


def workload_from_recipe(path: str | Path) -> Workload:
    """A Workload from a recipe file (what resolve() does for `.toml`)."""
    p = Path(path)
    key = p.resolve()
    if key in _BUILDING:  # was a RecursionError traceback
        chain = " -> ".join(q.name for q in [*_BUILDING[_BUILDING.index(key):], key])
        raise InputError(f"the recipe's source leads back to itself ({chain})", file=str(p), field="source")
    _BUILDING.append(key)
    try:
        workload = build(load_recipe(p), p.resolve().parent)
    finally:
        _BUILDING.pop()
    workload.meta["recipe_file"] = str(p)
    return workload
