#!/usr/bin/python3
"""qsf-compose ARGS: ``docker compose ARGS`` in the project's directory on the EC2 instance, with
the stack's settings read from SSM Parameter Store (SecureString parameters named like .env's
keys under a prefix, e.g. /qsf/QSF_PG_PASSWORD) into the command's environment: no secret is
written to disk, to user data or to Terraform's state. cloud-init installs it as
/usr/local/bin/qsf-compose and runs ``qsf-compose up -d --build``; later, e.g.
``sudo qsf-compose ps`` or ``sudo qsf-compose logs -f processor``.

Where the settings are (not secret) comes from /etc/qsf-compose.env: QSF_AWS_REGION,
QSF_SSM_PREFIX, QSF_PROJECT_DIR.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping

CONFIG = "/etc/qsf-compose.env"
REQUIRED = ("QSF_PG_PASSWORD", "QSF_DASHBOARD_PASSWORD")
NAME = re.compile(r"[A-Z_][A-Z0-9_]*\Z")


class SettingsError(Exception):
    """Settings that cannot start the stack; the message says which and why."""


def read_config(text: str) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise SettingsError(f"{CONFIG}: not KEY=VALUE: {line!r}")
            out[key.strip()] = value.strip()
    return out


def settings(parameters: Iterable[tuple[str, str]], prefix: str) -> dict[str, str]:
    """The environment the compose file reads, from (parameter name, value) pairs under
    ``prefix``: each name's last part is the variable (``/qsf/QSF_PG_PASSWORD`` ->
    ``QSF_PG_PASSWORD``). Refuses a name that is no variable, a nested name and missing
    required passwords, naming them (never a value)."""
    base = prefix.rstrip("/") + "/"
    env: dict[str, str] = {}
    for name, value in parameters:
        if not name.startswith(base):
            raise SettingsError(f"parameter {name} is not under {base}")
        key = name[len(base):]
        if not NAME.match(key):
            raise SettingsError(f"parameter {name}: {key!r} is not an environment variable name (A-Z, 0-9, _)")
        env[key] = value
    missing = [key for key in REQUIRED if not env.get(key)]
    if missing:
        raise SettingsError(f"missing in SSM Parameter Store: {', '.join(base + key for key in missing)} "
                            f"(aws ssm put-parameter --type SecureString --name {base}{missing[0]} --value ...)")
    return env


def fetch(region: str, prefix: str) -> list[tuple[str, str]]:
    """Every parameter under ``prefix``, decrypted (the instance role may read only these)."""
    import boto3

    ssm = boto3.client("ssm", region_name=region)
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=prefix, Recursive=False, WithDecryption=True)
    return [(p["Name"], p["Value"]) for page in pages for p in page["Parameters"]]


def main(argv: list[str], environ: Mapping[str, str]) -> int:
    path = environ.get("QSF_COMPOSE_CONFIG", CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            config = read_config(f.read())
        missing = [key for key in ("QSF_AWS_REGION", "QSF_SSM_PREFIX", "QSF_PROJECT_DIR") if not config.get(key)]
        if missing:
            raise SettingsError(f"{path} has no {', '.join(missing)}")
        prefix = config["QSF_SSM_PREFIX"]
        env = {**environ, **settings(fetch(config["QSF_AWS_REGION"], prefix), prefix)}
    except OSError as exc:
        print(f"qsf-compose: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except Exception as exc:  # SettingsError, and boto3's: no credentials, access denied, no endpoint
        print(f"qsf-compose: {exc}", file=sys.stderr)
        return 2
    os.chdir(config["QSF_PROJECT_DIR"])
    os.execvpe("docker", ["docker", "compose", *argv], env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
