"""The live operations dashboard in Chromium against the embedded stack while ``qsf process
--sink timescale`` runs: a signal the processor writes after the page loaded appears on it
without a reload (its 2 s refresh), and every request goes to localhost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from qsframework.backtest import run_backtest
from qsframework.kafka import ensure_topics
from qsframework.recording import Recording, RecordingWriter
from qsframework.wire import encode

from ..conftest import SPREAD_SPEC, make_trades, qsf_cmd
from ..fault.processes import wait_for
from ..live.feeds import fetch, fresh_database, publish
from .browser import browser_page, dashboard, screenshot, wait_for_charts

PARAMS = ["-p", "window=2s", "-p", "sample=500ms", "-p", "threshold=0.004"]
OVERRIDES = {"window": "2s", "sample": "500ms", "threshold": "0.004"}


def divergences(dsn: str) -> int:
    if fetch(dsn, "SELECT to_regclass('signals') AS t")[0]["t"] is None:
        return 0
    return fetch(dsn, "SELECT count(*) AS n FROM signals WHERE name = 'divergence'")[0]["n"]


def shown(ts_ns: int) -> str:
    """How the page writes an event time (microseconds, UTC)."""
    return f"{datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_ns // 1000):%Y-%m-%d %H:%M:%S.%f} UTC"


def test_live_dashboard_shows_a_new_signal_without_reload(stack_endpoints, tmp_path, spread_cls):
    bootstrap = stack_endpoints.kafka_bootstrap
    dsn = fresh_database(stack_endpoints.pg_dsn, "livebrowser")
    trades = make_trades(41, 1600, start=time.time_ns() - 40 * 60 * 10**9)
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    # what the processor will have emitted: the backtest's divergence signals before the last
    # event time (the rows at it wait behind the watermark while the run goes on)
    ts_max = trades.column("ts_event").to_numpy().max()
    signals = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES).tables["signals"].to_pylist()
    div = [s for s in signals if s["name"] == "divergence" and s["ts_event"] < ts_max]
    first_half = trades.slice(0, 800)
    cut = first_half.column("ts_event").to_numpy().max()
    assert [s for s in div if s["ts_event"] < cut] and div[-1]["ts_event"] > cut  # a new one in the second half
    pairs = encode(trades)
    prefix = f"lb{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, [f"{prefix}.trades", f"{prefix}.dlq"]))
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn}
    proc = subprocess.Popen(
        [*qsf_cmd(), "process", SPREAD_SPEC, *PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}",
         "--no-state", "--sink", "timescale", "--health-interval", "1s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        publish(bootstrap, f"{prefix}.trades", pairs[:800])
        wait_for(lambda: divergences(dsn) > 0, "the first signals in PostgreSQL", proc=proc)
        with dashboard("live", env={"QSF_PG_DSN": dsn}) as dash:
            with browser_page(dash.url) as (page, requests):
                wait_for_charts(page, 3)  # prices, spread and correlation, pipeline health
                page.get_by_text("latest signal: ").wait_for()
                page.get_by_text("events/s").first.wait_for()
                with ThreadPoolExecutor(1) as pool:  # Playwright's sync API runs a loop in this thread
                    pool.submit(publish, bootstrap, f"{prefix}.trades", pairs[800:]).result()
                # the newest signal shows up on the page as it is: no reload
                page.get_by_text(f"divergence BTCUSDT/ETHUSDT at {shown(div[-1]['ts_event'])}").wait_for()
                shot = screenshot(page, tmp_path / "dashboard-live.png", charts=3)
            assert dash.stop() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert requests.all and not requests.outside, requests.outside
    assert shot.stat().st_size > 10_000
