"""``python -m qsframework.cli``: the same as ``qsf``."""

from . import run

run()
