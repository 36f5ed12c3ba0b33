"""The grid of a sweep: ``-g NAME=VALUES`` (a list ``a,b,c`` or a range ``lo:hi:step``) per
parameter, typed like the strategy's declared parameter; the points are their product."""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from ..durations import Duration, parse_duration
from ..errors import UserError
from ..params import _coerce, build_params

#: a range of more points than this is surely a typo (e.g. a step of 0.0001 meant 0.001)
MAX_RANGE = 100_000


@dataclasses.dataclass(frozen=True)
class ParamSpace(Mapping[str, tuple[Any, ...]]):
    """Parameter name -> its values, in the order given; the grid is their product."""

    values: dict[str, tuple[Any, ...]]

    def __getitem__(self, name: str) -> tuple[Any, ...]:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def size(self) -> int:
        """How many points the grid has."""
        n = 1
        for v in self.values.values():
            n *= len(v)
        return n

    def points(self) -> Iterator[dict[str, Any]]:
        """Every point of the grid, the last parameter varying fastest."""
        names = list(self.values)
        for combo in itertools.product(*self.values.values()):
            yield dict(zip(names, combo))


def parse_grid(params_cls: type, specs: Sequence[str], *, owner: str = "strategy") -> ParamSpace:
    """``["window=30s,60s", "threshold=0.003:0.01:0.001"]`` -> a :class:`ParamSpace` over
    ``params_cls`` (the strategy's ``Params``); every point is checked to build."""
    fields = [f.name for f in dataclasses.fields(params_cls)]
    hints = typing.get_type_hints(params_cls)
    values: dict[str, tuple[Any, ...]] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise UserError(f"-g {spec!r} is not of the form NAME=VALUES (a,b,c or lo:hi:step)")
        if name not in fields:
            raise UserError(f"unknown parameter {name!r} for {owner} (known: {', '.join(fields) or 'none'})")
        if name in values:
            raise UserError(f"-g {name} is given twice")
        values[name] = parse_values(name, hints[name], text.strip())
    space = ParamSpace(values)
    for point in space.points():
        try:
            build_params(params_cls, point, owner=owner)
        except UserError as exc:
            where = ", ".join(f"{k}={format_value(v)}" for k, v in point.items())
            raise UserError(f"grid point {where}: {exc}") from None
    return space


def parse_values(name: str, kind: Any, text: str) -> tuple[Any, ...]:
    """The values of one ``-g`` option: ``a,b,c`` or ``lo:hi:step`` (hi included when it
    falls on the grid), each coerced to ``kind``; duplicates dropped, order kept."""
    if ":" in text and "," not in text:
        values = _range(name, kind, text)
    else:
        values = [_coerce(name, kind, part.strip()) for part in text.split(",")]
    return tuple(dict.fromkeys(values))


def _range(name: str, kind: Any, text: str) -> list[Any]:
    parts = text.split(":")
    if len(parts) != 3:
        raise UserError(f"-g {name}={text}: a range is lo:hi:step")
    kind = _plain(kind)
    try:
        if kind is Duration:
            lo, hi, step = (Decimal(parse_duration(p)) for p in parts)
        elif kind in (int, float):
            lo, hi, step = (Decimal(p.strip()) for p in parts)
        else:
            raise UserError(f"-g {name}={text}: a range needs a number or duration parameter, "
                            f"{name} is {getattr(kind, '__name__', kind)}")
    except (InvalidOperation, ValueError):
        raise UserError(f"-g {name}={text}: lo, hi and step must be numbers"
                        + (" or durations" if kind is Duration else "")) from None
    if not step > 0:
        raise UserError(f"-g {name}={text}: the step must be positive")
    if hi < lo:
        raise UserError(f"-g {name}={text}: hi is below lo")
    count = int((hi - lo) / step) + 1
    if count > MAX_RANGE:
        raise UserError(f"-g {name}={text}: {count:,} values (at most {MAX_RANGE:,})")
    exact = [lo + i * step for i in range(count)]  # Decimal: no drift, 0.003 + 7 x 0.001 = 0.01
    if kind is float:
        return [float(v) for v in exact]
    if any(v != v.to_integral_value() for v in exact):
        raise UserError(f"-g {name}={text}: {name} takes whole numbers"
                        + (" of nanoseconds" if kind is Duration else ""))
    return [kind(int(v)) for v in exact]


def _plain(kind: Any) -> Any:
    """``float | None`` -> ``float``: the type a range is made of."""
    if typing.get_origin(kind) is typing.Union or isinstance(kind, type(int | None)):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if args else kind
    return kind


def format_value(value: Any) -> Any:
    """A parameter value as JSON and the sweep table hold it: durations as text (``30s``)."""
    if isinstance(value, Duration):
        return str(value)
    return value
