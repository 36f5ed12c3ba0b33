"""Reference strategies bundled with QuantStream (installed as ``qsframework.strategies``)."""
