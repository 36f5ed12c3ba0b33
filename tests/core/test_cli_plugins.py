"""Commands come from installed packages through the qsframework.commands entry points: a
third-party package adds `qsf record X` without touching qsframework, and one that fails to
load costs only its own commands."""

from __future__ import annotations

import os
import subprocess
import textwrap

from ..conftest import run_qsf


def _package(root, name: str, body: str, *, target: str) -> None:
    """An installed-looking package: a module and a dist-info naming its entry point."""
    (root / f"{name}.py").write_text(textwrap.dedent(body))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[qsframework.commands]\n{name} = {target}\n")


def _qsf(tmp_path, *args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    return run_qsf(*args, env={"PYTHONPATH": path}, cwd=tmp_path, timeout=120)


def test_a_package_adds_a_record_command_and_a_broken_one_costs_only_its_own(tmp_path):
    _package(tmp_path, "qsf_venue", '''
        import click

        @click.command("venue")
        @click.option("--symbols", required=True)
        def record_venue(symbols):
            """Record the venue's trades."""
            click.echo(f"recording {symbols}")

        def register(cli):
            cli.record.add_command(record_venue)
        ''', target="qsf_venue:register")
    _package(tmp_path, "qsf_broken", "raise ImportError('no such thing')\n", target="qsf_broken:register")

    r = _qsf(tmp_path, "record", "--help")
    assert r.returncode == 0, r.stderr
    assert "venue" in r.stdout and "Record the venue's trades." in r.stdout
    assert "binance" in r.stdout and "mavlink" in r.stdout  # the adapters' own, the same way
    assert r.stderr.count("\n") == 1 and "the commands of qsf_broken (qsf_broken:register) are not available" in r.stderr

    r = _qsf(tmp_path, "record", "venue", "--symbols", "ABC")
    assert r.returncode == 0 and r.stdout == "recording ABC\n"
    r = _qsf(tmp_path, "record", "venue")
    assert r.returncode == 2 and "Missing option '--symbols'" in r.stderr


def test_without_the_mavlink_extra_qsf_says_nothing_until_a_command_needs_it(tmp_path):
    """pymavlink is an extra: a machine without it gets no warning on every command (the
    ``qsf sitl`` commands register without importing it), and ``qsf sitl emulate`` is one line."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent('''
        import sys

        class _NoMavlink:  # this interpreter has no pymavlink installed
            def find_spec(self, name, path=None, target=None):
                if name == "pymavlink" or name.startswith("pymavlink."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, _NoMavlink())
    '''))
    ok = _qsf(tmp_path, "--help")
    assert ok.returncode == 0 and "sitl" in ok.stdout
    assert ok.stderr == ""
    run = _qsf(tmp_path, "sitl", "emulate", "--to", "udp:127.0.0.1:9")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "qsf: error: the emulator needs pymavlink: pip install 'qsframework[mavlink]'"
    ]
