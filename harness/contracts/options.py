"""The options layer every system shares: a system declares its options once, as a pydantic model
(`Options`: one field per option, its default, its bounds, and a docstring that says what it is and,
where the default models reality, which measurement it follows); `validate` checks a dict of values
against it and turns pydantic's ValidationError into the one-line InputError the CLI prints (exit 2).
Simulated systems (systems/sim/options.py) and live ones (systems/live/options.py) both use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from harness.contracts.errors import InputError

M = TypeVar("M", bound=BaseModel)


class Options(BaseModel):
    """Base of every options model: unknown names, NaN and inf are refused; defaults are validated
    too (a default that breaks its own bound fails at the first use, not silently); a field's
    docstring is its description (listed by `warmbench presets`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True,
                              use_attribute_docstrings=True)


def validate(model: type[M], values: Mapping[str, Any] | None, *, what: str = "", file: str | None = None,
             show_input: bool = True, known: Iterable[str] | None = None) -> M:
    """`values` checked by `model`; the first problem is one InputError naming the option (and the
    file and key when the values came from one). `what` prefixes the message (e.g. "system 'x': ");
    `show_input` quotes the bad value (off where a value may be a credential); `known` lists the
    names an unknown option is told about (default: the model's fields)."""
    try:
        return model.model_validate(dict(values or {}))
    except ValidationError as exc:
        raise input_error(exc, what=what, file=file, show_input=show_input,
                          known=model.model_fields if known is None else known) from None


def input_error(exc: ValidationError, *, what: str = "", file: str | None = None, show_input: bool = True,
                known: Iterable[str] = (), noun: str = "option", at: Iterable[str | int] = (),
                skip: Iterable[str] = ()) -> InputError:
    """pydantic's first error as the project's one line, `{what}{noun} 'key': why (got value)`, with
    `file F, field 'key': ` before it when the values came from a file. The one converter from
    pydantic to the user: options, experiment files, workload parameters, recipes, cluster TOML.

    `noun` names what the key is ("option", "parameter", "key"); `at` is the location of the
    validated value inside its file (prefixed to pydantic's `loc`); `skip` drops location parts that
    are not keys (a tagged union's tag); `show_input` quotes the bad value (off where a value may be a
    credential); `known` lists the names an unknown key is told about."""
    errors = exc.errors()
    err = errors[0]
    skipped = set(skip)
    key = ".".join(str(p) for p in (*at, *err["loc"]) if str(p) not in skipped)
    if err["type"] == "extra_forbidden":
        names = sorted(known)
        why = f"unknown {noun} {key!r}" + (f"; known: {', '.join(names)}" if names else "")
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        why = f"{noun} {key!r}: {msg}" if key else msg
        if show_input and key and err["type"] != "missing":  # a whole table's input is noise, not a value
            why += f" (got {err['input']!r})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    error = InputError(f"{what}{why}{more}", file=file, field=key if file and key else None)
    error.key = key or None
    return error


def describe(field: FieldInfo) -> str:
    """A field's type and bounds in words (`an integer >= 1 and <= 4096`, `a number > 0`, `a
    boolean`, `..., or auto` where None is allowed), for listings: the tightest of the bounds its
    type and its Field declare."""
    kinds: list[str] = []
    metadata = list(field.metadata)
    _walk(field.annotation, kinds, metadata)
    low: tuple[float, bool] | None = None   # (bound, open)
    high: tuple[float, bool] | None = None
    for item in metadata:
        if isinstance(item, (Ge, Gt)):
            value: Any = item.ge if isinstance(item, Ge) else item.gt
            bound = (float(value), isinstance(item, Gt))
            low = bound if low is None or bound > low else low
        elif isinstance(item, (Le, Lt)):
            value = item.le if isinstance(item, Le) else item.lt
            bound = (float(value), isinstance(item, Lt))
            high = bound if high is None or (bound[0], not bound[1]) < (high[0], not high[1]) else high
    if "bool" in kinds:
        text = "a boolean"
    else:
        noun = "an integer" if "int" in kinds else "a number" if "float" in kinds else " or ".join(
            k for k in kinds if k != "NoneType")
        span = [f"{'>' if low[1] else '>='} {_number(low[0])}"] if low else []
        span += [f"{'<' if high[1] else '<='} {_number(high[0])}"] if high else []
        text = " ".join([noun, " and ".join(span)]).strip()
    return text + (", or auto" if "NoneType" in kinds else "")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else f"{value:g}"


def _walk(annotation: Any, kinds: list[str], metadata: list[Any]) -> None:
    """The type names a field accepts (`float | None` -> float, NoneType) and the constraints
    nested in its annotation."""
    if get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            _walk(arg, kinds, metadata)
    elif get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        for item in extra:
            metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        _walk(inner, kinds, metadata)
    else:
        kinds.append(getattr(annotation, "__name__", str(annotation)))
