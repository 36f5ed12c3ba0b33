"""Strategy parameters: a frozen dataclass per strategy, overridden from ``-p name=value``."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from .durations import Duration
from .errors import UserError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoParams:
    """Parameters of a strategy that takes none."""


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["window=30s", "threshold=0.01"]`` -> ``{"window": "30s", "threshold": "0.01"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"parameter {pair!r} is not of the form name=value")
        out[name.strip()] = value.strip()
    return out


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return kind(value) if kind in (Duration, float) and isinstance(value, int | float) else value
    try:
        if kind is bool:
            low = value.lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError
        if kind is Duration:
            return Duration(value)
        if kind in (int, float, str):
            return kind(value)
        if typing.get_origin(kind) is typing.Union or isinstance(kind, type(int | None)):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            if value.lower() in {"", "none", "null"}:
                return None
            return _coerce(name, args[0], value)
    except ValueError:
        pass
    else:
        return value
    tname = "duration (e.g. 30s)" if kind is Duration else getattr(kind, "__name__", str(kind))
    raise UserError(f"parameter {name}={value!r} is not a valid {tname}")


def build_params(cls: type, overrides: Mapping[str, Any], *, owner: str = "strategy") -> Any:
    """An instance of the frozen dataclass ``cls`` with ``overrides`` coerced to field types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        known = ", ".join(fields) or "none"
        raise UserError(f"unknown parameter {unknown[0]!r} for {owner} (known: {known})")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(k, hints[k], v) for k, v in overrides.items()}
    try:
        params = cls(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad parameters for {owner}: {exc}") from None
    check = getattr(params, "check", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise UserError(f"bad parameters for {owner}: {exc}") from None
    return params


def describe_params(params: Any) -> dict[str, str]:
    """Parameter values as text, for reports."""
    return {f.name: str(getattr(params, f.name)) for f in dataclasses.fields(params)}
