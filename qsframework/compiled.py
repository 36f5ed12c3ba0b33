"""Modules that setup.py compiles with mypyc: which ones, and loading them safely.

A compiled module carries ``SOURCE_SHA256``, the hash of the source it was built from.
:func:`load` imports the compiled module when that hash matches the ``.py`` beside it and
the source otherwise (an editable checkout whose source changed after the build), so an
edit is never shadowed by an old build; ``QSF_PURE_PYTHON=1`` runs the source regardless. Either way the module is registered under its own
name, so pickles refer to one class.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

#: installed module name -> source path in the repository (read by setup.py)
MODULES = {"qsframework.strategies.spread_core": "strategies/spread_core.py"}


def source_hash(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def is_compiled(module: ModuleType) -> bool:
    return not str(getattr(module, "__file__", "")).endswith(".py")


def load(name: str) -> ModuleType:
    """The compiled build of ``name`` if it matches its source, else the source itself.

    ``QSF_PURE_PYTHON=1`` in the environment runs the source even when the build is
    current (to step through it in a debugger, or to compare speeds).
    """
    module = importlib.import_module(name)
    if not is_compiled(module):
        return module
    source = Path(module.__file__).parent / (name.rpartition(".")[2] + ".py")  # type: ignore[arg-type]
    if not source.exists():
        return module
    if os.environ.get("QSF_PURE_PYTHON"):
        log.info("%s: QSF_PURE_PYTHON is set; running the source", name)
    elif getattr(module, "SOURCE_SHA256", None) == source_hash(source.read_bytes()):
        return module
    else:
        log.warning("%s: the compiled build is older than %s; running the source "
                    "(reinstall to recompile)", name, source)
    spec = importlib.util.spec_from_file_location(name, source)
    fresh = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = fresh
    spec.loader.exec_module(fresh)  # type: ignore[union-attr]
    return fresh
