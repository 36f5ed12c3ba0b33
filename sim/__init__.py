"""Simulators (installed as ``qsframework.sim``): stand-ins for the outside world that feed the
pipeline through its real edges, for research, demos and tests.

- :mod:`.market`: seeded synthetic Binance trades (``qsf recordings generate``)
- :mod:`.vehicle`: a MAVLink vehicle emulator with fault injection and scored anomaly runs
  (``qsf sitl``)
"""
