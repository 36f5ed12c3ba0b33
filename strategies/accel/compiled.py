"""Compiled code, loaded safely: mypyc builds that match their source, cached numba kernels.

Which modules setup.py compiles with mypyc is listed in pyproject.toml
(``[tool.qsframework.mypyc]``). A compiled module carries ``SOURCE_SHA256``, the hash of
the source it was built from. :func:`load` imports the compiled module when that hash
matches the ``.py`` beside it and the source otherwise (an editable checkout whose source
changed after the build), so an edit is never shadowed by an old build;
``QSF_PURE_PYTHON=1`` runs the source regardless. Either way the module is registered
under its own name, so pickles refer to one class.
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
from typing import Any

log = logging.getLogger(__name__)


def source_hash(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def is_compiled(module: ModuleType) -> bool:
    return not str(getattr(module, "__file__", "")).endswith(".py")


def source_path(name: str) -> Path:
    """The ``.py`` of module ``name``, beside its compiled build if it has one."""
    module = importlib.import_module(name)
    return Path(module.__file__).parent / (name.rpartition(".")[2] + ".py")  # type: ignore[arg-type]


def import_source(name: str, *, as_name: str | None = None) -> ModuleType:
    """Run the source of module ``name`` (never its build), registered as ``as_name``;
    by default as ``name`` itself, in place of the build."""
    as_name = as_name or name
    spec = importlib.util.spec_from_file_location(as_name, source_path(name))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[as_name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def load(name: str) -> ModuleType:
    """The compiled build of ``name`` if it matches its source, else the source itself.

    ``QSF_PURE_PYTHON=1`` in the environment runs the source even when the build is
    current (to step through it in a debugger, or to compare speeds).
    """
    module = importlib.import_module(name)
    if not is_compiled(module):
        return module
    source = source_path(name)
    if not source.exists():
        return module
    if os.environ.get("QSF_PURE_PYTHON"):
        log.info("%s: QSF_PURE_PYTHON is set; running the source", name)
    elif getattr(module, "SOURCE_SHA256", None) == source_hash(source.read_bytes()):
        return module
    else:
        log.warning("%s: the compiled build is older than %s; running the source "
                    "(reinstall to recompile)", name, source)
    return import_source(name)


def kernel_ready(kernel: Any, *args: Any) -> bool:
    """Whether numba ``kernel`` runs on ``args`` without compiling: compiled in this process
    already, or in its on-disk cache (then loaded now, which takes milliseconds)."""
    sig = tuple(kernel.typeof_pyval(a) for a in args)
    if sig in kernel.overloads:
        return True
    cache = getattr(kernel, "_cache", None)  # numba's per-function disk cache (cache=True)
    if cache is None or cache.load_overload(sig, kernel.targetctx) is None:
        return False
    kernel.compile(sig)  # found: load it into the dispatcher as a call would
    return True
