"""Source adapters (installed as ``qsframework.adapters``): Binance and MAVLink arrive in later issues."""
