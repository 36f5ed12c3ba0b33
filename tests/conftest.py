"""Shared fixtures: small trade tables with ties, gaps and divergences."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, settings

from qsframework.events import TRADE
from qsframework.order import sort_table

ROOT = Path(__file__).resolve().parent.parent
SPREAD_SPEC = str(ROOT / "strategies" / "btc_eth_spread.py") + ":BtcEthSpread"
T0 = 1_767_571_200_000_000_000  # 2026-01-05T00:00:00Z

def pytest_configure(config: pytest.Config) -> None:
    """QSF_TEST_BROKER checked, the ``tansu`` marker, and each session's temporary files in
    a directory of its own under the system temp dir.

    Under pytest's shared /tmp/pytest-of-USER, a second session starting on the machine
    resets that directory to mode 0700, which takes away the embedded PostgreSQL's OS user's
    way to its data directory mid-run (initdb then fails): two test runs side by side must
    not break each other."""
    broker_setting()  # a wrong value stops the run before any test (exit code 4)
    config.addinivalue_line("markers", "tansu: starts an embedded Tansu broker of its own (the no-Java default)")
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="qsf-pytest-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))


settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def make_trades(
    seed: int,
    n: int,
    *,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    gaps_ms: tuple[int, ...] = (0, 0, 1, 5, 40, 250, 1000, 7000),
    jump: float = 0.01,
    start: int = T0,
) -> pa.Table:
    """A random trade table in total order: ties, quiet gaps and sudden jumps included."""
    rng = np.random.default_rng(seed)
    ts = start + np.cumsum(rng.choice(np.array(gaps_ms, np.int64), n)) * 1_000_000
    keys = rng.choice(np.array(symbols), n)
    base = {s: 100.0 * (i + 1) for i, s in enumerate(symbols)}
    steps = rng.normal(0, 0.0008, n) + rng.choice([0.0, 0.0, 0.0, jump, -jump], n, p=[0.9, 0.04, 0.02, 0.02, 0.02])
    price = np.empty(n)
    level = dict.fromkeys(symbols, 0.0)
    for i, (k, s) in enumerate(zip(keys.tolist(), steps.tolist())):
        level[k] += s
        price[i] = round(base[k] * float(np.exp(level[k])), 2)
    table = pa.table(
        {
            "ts_event": ts,
            "ts_recv": ts + 3_000_000,
            "source": pa.array(["binance"] * n),
            "key": pa.array(keys.tolist()),
            "seq": np.arange(n, dtype=np.int64) + 1000,
            "price": price,
            "qty": rng.lognormal(-3, 1, n),
            "is_buyer_maker": rng.random(n) < 0.5,
        },
        schema=TRADE.schema,
    )
    return sort_table(table)


def qsf_cmd() -> list[str]:
    """The installed ``qsf`` next to this interpreter (falls back to ``python -m``)."""
    exe = Path(sys.executable).with_name("qsf")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "qsframework.cli"]


def run_qsf(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``qsf ARGS`` as a user runs it, in a subprocess (stdout and stderr captured as text);
    ``env`` adds to this process's environment. The exit code is left to the caller."""
    return subprocess.run([*qsf_cmd(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env}, cwd=cwd)


@pytest.fixture(scope="session")
def spread_cls():
    from qsframework.loader import load_strategy

    return load_strategy(SPREAD_SPEC)


def broker_setting() -> str:
    """QSF_TEST_BROKER, checked: kafka, tansu or auto (the default)."""
    broker = os.environ.get("QSF_TEST_BROKER") or "auto"
    if broker not in ("tansu", "kafka", "auto"):
        raise pytest.UsageError(f"QSF_TEST_BROKER={broker!r}: use kafka, tansu or auto")
    return broker


def live_broker() -> str:
    """The broker kind the live tests run on: QSF_TEST_BROKER (kafka, tansu or auto, the
    default), auto being Apache Kafka where Java 17+ and its jars (cached, or Maven) are
    available, else Tansu."""
    from qsframework.stack.kafka import kafka_usable

    broker = broker_setting()
    if broker == "auto":
        return "kafka" if kafka_usable() else "tansu"
    return broker


def pytest_report_header(config: pytest.Config) -> str:
    """Which broker the live tests run on, at the top of the log."""
    from qsframework.stack import endpoints_from_env

    if endpoints_from_env() is not None:
        return "qsf live tests: external services (QSF_KAFKA_BOOTSTRAP, QSF_PG_DSN)"
    return f"qsf live tests: embedded {live_broker()} (QSF_TEST_BROKER={broker_setting()})"


@pytest.fixture(scope="session")
def stack_endpoints(tmp_path_factory, request):
    """A real broker and PostgreSQL: external ones from QSF_KAFKA_BOOTSTRAP/QSF_PG_DSN, or
    the embedded stack started once for the whole session, its broker chosen by
    QSF_TEST_BROKER (see ``live_broker``)."""
    from qsframework.stack import Stack, endpoints_from_env

    external = endpoints_from_env()
    if external is not None:
        yield external
        return
    kind = live_broker()
    if kind == "kafka":
        from qsframework.stack.kafka import resolve_jars

        # once per machine (~40 s): its progress line in the log, not in pytest's capture
        with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            resolve_jars()
    stack = Stack(tmp_path_factory.mktemp("stack"), broker=kind)
    try:
        yield stack.up()
    finally:
        stack.down(purge=True)
