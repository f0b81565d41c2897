"""Parameter models of the workload presets: types and bounds checked before anything is generated.

A preset's parameters are validated here (cheaply: no workload is built), so an experiment grid
can check every run's workload before the first run, and `trace stats -p ...` names the bad
parameter in one line instead of failing (or silently inverting shares) deep in a generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.contracts.options import input_error

#: Largest seed: numpy's generators take non-negative ints; int64 keeps them portable.
MAX_SEED = 2**63 - 1
#: Most requests a preset may generate (history included): about 10 GB of tables.
MAX_GENERATED_REQUESTS = 200_000_000
DAY_S = 86_400.0


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: Any) -> Any:
        field = cls.model_fields[info.field_name]
        if isinstance(value, bool) and field.annotation in (int, float, int | None, float | None):
            raise ValueError("expected a number, got a boolean")
        return value


class SyntheticParams(_Params):
    """`synthetic-week` (workloads/synthetic.py)."""

    models: list[str] | None = Field(None, min_length=1)
    total_rps: float = Field(5.0, gt=0, le=1e6)
    alpha: float = Field(1.0, ge=0, le=100)
    duration_s: float = Field(1200.0, gt=0, le=1e8)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    start_hour: float = Field(10.0, ge=0, lt=24)
    history_days: int = Field(6, ge=0, le=366)
    window_s: float = Field(300.0, gt=0, le=DAY_S)
    clip: bool = True
    cv: float | None = Field(None, gt=0, le=100)

    @field_validator("models", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):  # `-p models=a,b` on the command line
            value = [m.strip() for m in value.split(",") if m.strip()]
        if isinstance(value, (list, tuple)) and not all(isinstance(m, str) and m.strip() for m in value):
            raise ValueError("model names must be non-empty strings")
        return value

    @model_validator(mode="after")
    def _size(self) -> SyntheticParams:
        expected = self.total_rps * (self.duration_s + self.history_days * DAY_S)
        if expected > MAX_GENERATED_REQUESTS:
            raise ValueError(f"total_rps x (duration_s + history_days days) is about {expected:.3g} requests, "
                             f"above the limit of {MAX_GENERATED_REQUESTS:.0e}; lower the rate, the duration "
                             "or history_days")
        return self


class Azure2024Params(SyntheticParams):
    """`azure-2024-conv` / `azure-2024-code` (workloads/azure_2024.py): the real week, seven UTC days.

    As synthetic-week, plus `start_day` (model i replays day start_day + i; None: the last days
    the slice fits in, leaving the most history). `start_hour` defaults to 0, as the recipe's
    (the paper does not say which hour it replays). Fields are checked in this order, so
    `start_day` sees the models and the slice it must fit.
    """

    duration_s: float = Field(1200.0, gt=0, le=7 * DAY_S)
    start_hour: float = Field(0.0, ge=0, lt=24)
    start_day: int | None = Field(None, ge=0, le=6, validate_default=True)

    @field_validator("start_day")
    @classmethod
    def _fits_the_week(cls, value: int | None, info: Any) -> int | None:
        data = info.data
        if not {"models", "start_hour", "duration_s"} <= set(data):
            return value  # one of them is itself invalid: that error is reported
        from workloads.azure_2024 import WEEK_S, last_full_day
        from workloads.synthetic import PAPER_MODELS
        n_models = len(data["models"] or PAPER_MODELS)
        last = last_full_day(WEEK_S, data["start_hour"], data["duration_s"])
        if last < 0:
            raise ValueError(f"no day of the week holds a {data['duration_s']:g} s slice from {data['start_hour']:g} h; "
                             "shorten duration_s or lower start_hour")
        first = max(last - n_models + 1, 0) if value is None else value
        if first + n_models - 1 > last:
            raise ValueError(f"the week covers days 0..{last} for a {data['duration_s']:g} s slice from "
                             f"{data['start_hour']:g} h; {n_models} models from day {first} need day "
                             f"{first + n_models - 1} (model i replays day start_day + i)")
        return value


#: Preset name -> its parameter model.
PRESET_PARAMS: dict[str, type[_Params]] = {"synthetic-week": SyntheticParams, "azure-2024-conv": Azure2024Params,
                                           "azure-2024-code": Azure2024Params}


def checked(model: type[BaseModel], values: Mapping[str, Any], *, what: str, file: str | None = None) -> Any:
    """`values` validated by `model`; the first problem is an InputError naming the parameter."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise input_error(exc, what=f"{what}: ", noun="parameter", file=file) from None


def check_preset_params(name: str, params: Mapping[str, Any], *, file: str | None = None) -> None:
    """Validate a preset's parameters without generating it; an unknown preset is not checked here."""
    model = PRESET_PARAMS.get(name)
    if model is not None:
        checked(model, {k: v for k, v in params.items() if v is not None}, what=f"preset {name!r}", file=file)
