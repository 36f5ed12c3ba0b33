"""MAVLink telemetry: decoding to events, live and file sources, and the SITL vehicle emulator."""
