"""Serve a dashboard notebook: marimo headless on 127.0.0.1, the URL printed once it answers,
Ctrl-C (or SIGTERM) stops the server and returns cleanly.

The server is a child process (``python -m marimo run|edit``) so marimo's own signal handling and
kernels stay as marimo ships them; this module only chooses the port, waits for the socket and
forwards the stop.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import UserError

HOST = "127.0.0.1"
NOTEBOOKS = Path(__file__).with_name("notebooks")
NAMES = ("backtest", "sweep", "live", "flight")
#: a safety net only: the server normally answers in a few seconds
START_BOUND_S = 180.0
STOP_BOUND_S = 30.0


@dataclass(frozen=True, kw_only=True)
class DashboardConfig:
    """What to serve: the notebook by name, its ``-- --flag value`` arguments, how."""

    name: str
    args: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    edit: bool = False
    host: str = HOST  #: beyond the loopback address only with a password
    password: str | None = field(default=None, repr=False)  #: asked of every browser (marimo's token)


LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "", "::")  #: every interface: reached here on the loopback address
PASSWORD_ENV = "QSF_DASHBOARD_PASSWORD"


def with_host(config: DashboardConfig, host: str | None) -> DashboardConfig:
    """CONFIG served on HOST: anything but the loopback address serves the network, so it takes
    the password from $QSF_DASHBOARD_PASSWORD (a one-line error without it; never on a command
    line, where other users of the machine could read it)."""
    if host is None or host in LOOPBACK:
        return config if host is None else dataclasses.replace(config, host=host)
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise UserError(f"--host {host} serves the dashboard to the network: set {PASSWORD_ENV} "
                        "(every browser is asked for it)")
    return dataclasses.replace(config, host=host, password=password)


def notebook_path(name: str) -> Path:
    """The installed notebook file of dashboard NAME; a one-line error when it is not there."""
    if name not in NAMES:
        raise UserError(f"unknown dashboard {name!r} (one of {', '.join(NAMES)})")
    path = NOTEBOOKS / f"{name}.py"
    if not path.is_file():
        raise UserError(f"the {name} dashboard is not installed in this version ({path} is missing)")
    return path


def check_port(port: int, host: str = HOST) -> None:
    """Fail with one line when PORT cannot be bound on HOST (marimo would silently move)."""
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: not a TCP port (1..65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise UserError(f"--port {port}: {why}") from None


def free_port() -> int:
    """A port the kernel has just handed out on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def marimo_command(config: DashboardConfig, port: int) -> list[str]:
    """The ``python -P -m marimo`` command line serving CONFIG's notebook on PORT. ``-P``: the
    working directory is not put on ``sys.path``, so a checkout's ``qsframework/`` source folder
    (where a user may well stand) does not shadow the installed package in the notebook."""
    cmd = [sys.executable, "-P", "-m", "marimo", "-q", "edit" if config.edit else "run", "--headless",
           "--host", config.host, "--port", str(port), "--no-sandbox",
           *(["--token", "--token-password-file", "-"] if config.password else ["--no-token"])]
    if config.edit:
        cmd.append("--skip-update-check")
    cmd.append(str(notebook_path(config.name)))
    extra = [part for key, value in config.args.items() for part in (f"--{key}", value)]
    return cmd + (["--", *extra] if extra else [])


def _wait_listening(port: int, child: subprocess.Popen[str], host: str = HOST) -> bool:
    """True once HOST:PORT accepts a connection (the loopback address for a wildcard host);
    False when the child exits first."""
    host = HOST if host in WILDCARD else host
    deadline = time.monotonic() + START_BOUND_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=5):
                return True
        except OSError:
            # the socket is not bound yet: block on the child's exit for a moment instead of
            # spinning (the wait returns at once if it exits)
            try:
                child.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
    return False


def _pump(stream: IO[str], sink: Callable[[str], None]) -> None:
    for line in stream:
        sink(line)


def serve(config: DashboardConfig, *, on_url: Callable[[str], None],
          log: Callable[[str], None] = lambda line: print(line, end="", file=sys.stderr)) -> int:
    """Run the server until it exits or Ctrl-C/SIGTERM; calls ON_URL once it answers.

    Returns 0 after a requested stop, else the server's exit code."""
    port = config.port if config.port is not None else free_port()
    if config.port is not None:
        check_port(port, config.host)
    cmd = marimo_command(config, port)
    env = {**os.environ, "MARIMO_SKIP_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    env.pop(PASSWORD_ENV, None)  # the notebook's code has no use for it
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             start_new_session=True, stdin=subprocess.PIPE if config.password else None)
    assert child.stdout is not None
    if config.password and child.stdin is not None:  # --token-password-file -
        child.stdin.write(config.password)
        child.stdin.close()
    pump = threading.Thread(target=_pump, args=(child.stdout, log), daemon=True)
    pump.start()
    # Ctrl-C stops the dashboard even when the parent started us with SIGINT ignored
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not _wait_listening(port, child, config.host):
            child.wait()
            pump.join()
            raise UserError(f"the marimo server did not start (exit code {child.returncode}; its "
                            "output is above)")
        shown = socket.gethostname() if config.host in WILDCARD else config.host
        on_url(f"http://{shown}:{port}" + (" (password: $QSF_DASHBOARD_PASSWORD)" if config.password else ""))
        return child.wait()
    except KeyboardInterrupt:
        _stop(child)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGINT and SIGTERM stop the dashboard the same way."""
    raise KeyboardInterrupt


def _stop(child: subprocess.Popen[str]) -> None:
    """SIGTERM to the server's process group (uvicorn's graceful exit), SIGKILL if it hangs."""
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=STOP_BOUND_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    except ProcessLookupError:
        pass
