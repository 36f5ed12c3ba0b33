"""docker-compose.yml as compose reads it: variables substituted from an .env (``${VAR}``,
``${VAR:-default}``, ``${VAR:?error}``, ``${VAR:+alternative}``, ``$$`` for a literal ``$``), and
a service's command line and environment mapped from the compose network onto this machine
(service host names and volume paths replaced)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

_VAR = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                  r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is unset or empty."""


def substitute(text: str, env: dict[str, str]) -> str:
    """``text`` with compose's variable substitution applied (values from ``env``)."""

    def one(m: re.Match) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg, value = m.group("op"), m.group("arg") or "", env.get(name)
        present = bool(value) if (op or ":").startswith(":") else value is not None
        if op in (":-", "-"):
            return value if present and value is not None else arg
        if op in (":?", "?"):
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return value or ""
        if op in (":+", "+"):
            return arg if present else ""
        return value or ""

    return _VAR.sub(one, text)


def variables(text: str) -> set[str]:
    """The names of the variables ``text`` refers to."""
    return {m.group("name") or m.group("bare") for m in _VAR.finditer(text) if not m.group("dollar")}


def _walk(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return substitute(node, env)
    if isinstance(node, list):
        return [_walk(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}
    return node


def services(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every service of docker-compose.yml, variables substituted from ``env`` (the .env)."""
    return _walk(yaml.safe_load(COMPOSE.read_text()), env)["services"]


def env_example() -> dict[str, str]:
    """.env.example's settings (KEY=VALUE lines)."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Mapping:
    """Where the compose network's names are on this machine: ``hosts`` maps ``host:port`` of
    a service to an address here, ``paths`` a container path (a volume) to a directory here,
    ``ports`` a published container port to a free one here."""

    hosts: dict[str, str]
    paths: dict[str, str]
    ports: dict[int, int]

    def text(self, value: str) -> str:
        for name, here in self.hosts.items():
            value = value.replace(name, here)
        for path, here in self.paths.items():
            value = re.sub(rf"(?<![\w/]){re.escape(path)}(?![\w/])", here, value)
        for port, free in self.ports.items():
            value = re.sub(rf"(?<!\d){port}(?!\d)", str(free), value)
        return value


def argv(service: dict[str, Any], key: str = "command") -> list[str]:
    """A service's command (or a healthcheck's test, ``key="healthcheck"``) as an argv list."""
    value = service["healthcheck"]["test"] if key == "healthcheck" else service[key]
    if isinstance(value, str):
        return shlex.split(value)
    if value[0] == "CMD":
        return value[1:]
    if value[0] == "CMD-SHELL":
        return ["sh", "-c", value[1]]
    return list(value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (compose's mapping or KEY=VALUE list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}
