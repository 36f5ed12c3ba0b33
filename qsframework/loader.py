"""Load a class from ``path/to/file.py:Class``, ``package.module:Class`` or a bundled name: a
strategy (:func:`load_strategy`) or a sink for ``qsf process --sink`` (:func:`load_sink`)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from .errors import UserError
from .io import Sink
from .strategy import Strategy

BUNDLED_PACKAGE = "qsframework.strategies"


def _from_file(path: Path, spec: str, what: str):
    if not path.is_file():
        raise UserError(f"{what} file {str(path)!r} does not exist")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"_qsf_strategy_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"cannot load {spec!r} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UserError(f"loading {spec!r} failed: {type(exc).__name__}: {exc}") from None
    return module


def _from_import(module_name: str, spec: str, what: str):
    for candidate in (module_name, f"{BUNDLED_PACKAGE}.{module_name}"):
        try:
            return importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            if exc.name is None or not candidate.startswith(exc.name):
                raise UserError(f"loading {spec!r} failed: {exc}") from None
        except Exception as exc:
            raise UserError(f"loading {spec!r} failed: {type(exc).__name__}: {exc}") from None
    raise UserError(f"{what} module {module_name!r} not found (give file.py:Class or module:Class)")


def load_strategy(spec: str) -> type[Strategy]:
    """The Strategy subclass named by ``spec`` (``file.py:Class`` or ``module:Class``)."""
    return _load_class(spec, Strategy, "strategy")


def load_sink(spec: str) -> type[Sink]:
    """The Sink subclass named by ``spec`` (``file.py:Class`` or ``module:Class``)."""
    return _load_class(spec, Sink, "sink")


def spec_file(spec: str) -> Path | None:
    """The Python file a ``file.py:Class`` spec names (None for ``module:Class``)."""
    target, sep, _ = spec.rpartition(":")
    return Path(target) if sep and (target.endswith(".py") or "/" in target or "\\" in target) else None


def _load_class(spec: str, base: type, what: str):
    """``what`` (strategy, sink) names the kind of file or module in the one-line errors."""
    target, sep, cls_name = spec.rpartition(":")
    if not sep or not target or not cls_name:
        raise UserError(f"{what} spec {spec!r} must be path/to/file.py:Class or module:Class")
    if spec_file(spec) is not None:
        module = _from_file(Path(target), spec, what)
    else:
        module = _from_import(target, spec, what)
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise UserError(f"{target!r} has no class {cls_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UserError(f"{spec!r} is not a qsframework {base.__name__} subclass")
    return cls
