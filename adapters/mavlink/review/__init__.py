"""``qsf uav review``: a flight review of a ``.tlog``, a DataFlash ``.bin`` or a recording.

- :mod:`.flight`: the log imported (into a temporary recording), read into Polars frames,
  with the messages the events do not carry (servo outputs, board power, parameters) and
  ``UavAnomaly``'s alerts from a backtest
- :mod:`.extras`: those other messages, read from the log itself
- :mod:`.series`: the vectorised pieces the checks share (runs of a condition, armed time)
- :mod:`.checks_power`, :mod:`.checks_nav`, :mod:`.checks_vehicle`: the LogAnalyzer-class checks
- :mod:`.report`: the check result, ``review.json`` and the terminal table
- :mod:`.commands`: the ``qsf uav`` command group (``qsframework.commands`` entry point)
"""
