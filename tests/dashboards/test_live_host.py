"""``qsf dashboard live --host``: beyond the loopback address (a container's dashboard) only with
$QSF_DASHBOARD_PASSWORD, which every browser is asked for (marimo's token); the password is on
no command line; ``--edit`` stays on the loopback address."""

from __future__ import annotations

import http.cookiejar
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from .browser import dashboard

PASSWORD = "correct-horse-battery"


def _get(url: str) -> tuple[str, str]:
    """The final path after redirects, with cookies kept, and the page."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(url, timeout=60) as resp:
        return urlsplit(resp.geturl()).path, resp.read().decode(errors="replace")


def _qsf(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "qsframework.cli", "dashboard", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_another_host_needs_the_password_and_edit_stays_local():
    env = {k: v for k, v in os.environ.items() if k != "QSF_DASHBOARD_PASSWORD"}
    r = _qsf("live", "--host", "0.0.0.0", env=env)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == ("qsf: error: --host 0.0.0.0 serves the dashboard to the network: set QSF_DASHBOARD_PASSWORD "
                        "(every browser is asked for it)\n")
    r = _qsf("live", "--host", "0.0.0.0", "--edit", env={**env, "QSF_DASHBOARD_PASSWORD": PASSWORD})
    assert (r.returncode, r.stderr) == (2, "qsf: error: --edit runs code the browser sends: only on 127.0.0.1, "
                                           "not with --host\n")


def test_every_interface_with_the_password_asked_of_every_browser(stack_endpoints):
    env = {"QSF_PG_DSN": stack_endpoints.pg_dsn, "QSF_DASHBOARD_PASSWORD": PASSWORD}
    with dashboard("live", "--host", "0.0.0.0", env=env) as d:
        port = urlsplit(d.url).port
        base = f"http://127.0.0.1:{port}/"
        assert _get(base)[0] == "/auth/login"
        assert _get(base + "?access_token=wrong")[0] == "/auth/login"
        path, page = _get(base + f"?access_token={PASSWORD}")
        assert path == "/" and "<title>QuantStream live operations</title>" in page
        assert not any(PASSWORD.encode() in c for c in _command_lines())
    assert d.proc.returncode == 0
    assert any("(password: $QSF_DASHBOARD_PASSWORD)" in line for line in d.output)


def _command_lines() -> list[bytes]:
    """Every process's command line (those that end meanwhile are left out)."""
    out = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(path.read_bytes())
        except OSError:
            pass
    return out
