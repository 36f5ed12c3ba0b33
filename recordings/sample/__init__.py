"""The sample recording of qsf demo (read with importlib.resources)."""
