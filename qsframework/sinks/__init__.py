"""Sinks: where the live engine's batches go before offsets are committed."""
