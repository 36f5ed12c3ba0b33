"""The SQL files that create the sink tables (read with importlib.resources; docker-compose
mounts this folder as TimescaleDB's init scripts, which skip this file)."""
