"""Build hook: compile the per-event hot modules with mypyc when a C compiler is at hand.

Everything else about the package is declared in pyproject.toml. The modules listed there
under ``[tool.qsframework.mypyc]`` are plain typed Python; here mypyc turns them into C
extensions that Python imports in their place (``strategies/accel/compiled.py`` loads
them). Without mypyc or a C compiler, or with ``QSF_PURE_PYTHON=1``, the package installs
as pure Python and runs the same code, slower.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tomllib
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
STAGE = Path("build") / "mypyc-src"


def _compiled_modules() -> dict[str, str]:
    """Installed module name -> source path, from pyproject.toml's ``[tool.qsframework.mypyc]``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["qsframework"]["mypyc"]["modules"]


def _stage(name: str, source: str) -> str:
    """Copy a source to its installed package path (mypyc names modules by path),
    stamped with the hash of the source it is built from."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        pkg = STAGE.joinpath(*parts[:i])
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").touch()
    text = (ROOT / source).read_bytes()
    staged = STAGE.joinpath(*parts).with_suffix(".py")
    stamp = f'\nSOURCE_SHA256 = "{hashlib.sha256(text).hexdigest()}"\n'
    staged.write_bytes(text + stamp.encode())
    return str(staged)


def ext_modules() -> list:
    if os.environ.get("QSF_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("setup.py: mypyc not available; installing pure Python", file=sys.stderr)
        return []
    paths = [_stage(name, src) for name, src in _compiled_modules().items()]
    try:
        exts = mypycify(paths, opt_level="3")
    except (Exception, SystemExit) as e:  # mypyc exits on a type error: install pure Python
        print(f"setup.py: mypyc failed ({e!r}); installing pure Python", file=sys.stderr)
        return []
    for ext in exts:
        ext.optional = True  # no C compiler: warn and install pure Python
    return exts


setup(ext_modules=ext_modules())
