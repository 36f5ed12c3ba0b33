"""MAVLink telemetry: decoding to events, live and file sources (tlog, DataFlash)."""
