import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="QuantStream live operations")


@app.cell
def _():
    import os

    import altair as alt
    import marimo as mo

    from qsframework.dashboards import live_loaders as L
    return L, alt, mo, os


@app.cell
def _(mo, os):
    # inputs: `-- --dsn DSN --window SECONDS --bucket SECONDS`, else $QSF_PG_DSN, 10 min in 2 s buckets
    dsn = mo.cli_args().get("dsn") or os.environ.get("QSF_PG_DSN")
    window_s = float(mo.cli_args().get("window") or 600)
    bucket_s = float(mo.cli_args().get("bucket") or 2)
    mo.stop(not dsn, mo.md("**No database**: set `QSF_PG_DSN` (e.g. `eval \"$(qsf stack up)\"`) or pass `-- --dsn DSN`."))
    return bucket_s, dsn, window_s


@app.cell
def _(mo):
    refresh = mo.ui.refresh(options=["1s", "2s", "5s", "10s"], default_interval="2s", label="refresh every")
    return (refresh,)


@app.cell
def _(L, bucket_s, dsn, mo, refresh, window_s):
    _tick = refresh.value  # each tick runs this cell (and the panels after it) again
    missing = L.missing_tables(dsn)
    mo.stop(bool(missing), mo.vstack([refresh, mo.md(
        f"Waiting for `qsf process --sink timescale` to create {', '.join(missing)} ...")]))
    timescale = L.has_timescale(dsn)
    opts = {"window_s": window_s, "bucket_s": bucket_s, "timescale": timescale}
    prices = L.load_live_prices(dsn, **opts)
    spread = L.load_live_spread(dsn, **opts)
    equity = L.load_live_equity(dsn, **opts)
    health = L.load_live_health(dsn, **opts)
    health_latest = L.load_live_health_latest(dsn)
    dead_letters = L.load_live_dead_letters(dsn, window_s=window_s)
    signals = L.load_live_recent(dsn, "signals", exclude_names=("spread",))
    alerts = L.load_live_recent(dsn, "alerts")
    fills = L.load_live_recent(dsn, "fills")
    return alerts, dead_letters, equity, fills, health, health_latest, prices, signals, spread, timescale


@app.cell
def _(health_latest, mo, refresh, signals, timescale):
    def _latest_signal():
        if signals.is_empty():
            return "latest signal: none yet"
        s = signals.row(0, named=True)
        return f"latest signal: **{s['name']} {s['key']} at {s['ts_event']:%Y-%m-%d %H:%M:%S.%f} UTC** ({s['value']:.6f})"

    def _stats():
        if health_latest.is_empty():
            return mo.md("pipeline health: no rows yet")
        h = health_latest.row(0, named=True)
        p50 = "–" if h["latency_ms_p50"] is None else f"{h['latency_ms_p50']:.1f} ms"
        p99 = "–" if h["latency_ms_p99"] is None else f"{h['latency_ms_p99']:.1f} ms"
        commit = "none yet" if h["last_commit"] is None else f"{h['last_commit']:%H:%M:%S} UTC"
        return mo.hstack([
            mo.stat(f"{h['events_per_s']:,.0f}", label="events/s", caption=h["group_id"]),
            mo.stat(f"{h['consumer_lag']:,}", label="consumer lag"),
            mo.stat(p50, label="latency p50"),
            mo.stat(p99, label="latency p99"),
            mo.stat(commit, label="last commit"),
        ], justify="start")

    mo.vstack([
        mo.hstack([mo.md("# Live operations"), refresh], justify="space-between"),
        mo.md(f"{'TimescaleDB (time_bucket)' if timescale else 'PostgreSQL'} · {_latest_signal()}"),
        _stats(),
    ])


@app.cell
def _(alt, mo, prices, spread):
    _price = (alt.Chart(prices).mark_line().encode(
        x=alt.X("bucket:T", title=None), y=alt.Y("price:Q", scale=alt.Scale(zero=False)), color="key:N")
        .properties(height=110, width=460).facet(row=alt.Row("key:N", title=None))
        .resolve_scale(y="independent").properties(title="latest prices"))
    _base = alt.Chart(spread).encode(x=alt.X("bucket:T", title=None)).properties(height=110, width=460)
    _spread = alt.vconcat(_base.mark_line(color="#4c78a8").encode(y=alt.Y("spread:Q", title="spread (log-return gap)")),
                          _base.mark_line(color="#f58518").encode(y=alt.Y("corr:Q", title="correlation")),
                          title="spread and correlation")
    mo.hstack([mo.ui.altair_chart(_price, chart_selection=False, legend_selection=False),
               mo.ui.altair_chart(_spread, chart_selection=False, legend_selection=False)], justify="start")


@app.cell
def _(alerts, fills, mo, signals):
    mo.vstack([
        mo.md("### recent signals"), mo.ui.table(signals, page_size=5, selection=None),
        mo.md("### recent alerts"), mo.ui.table(alerts, page_size=5, selection=None),
        mo.md("### paper fills"), mo.ui.table(fills, page_size=5, selection=None),
    ])


@app.cell
def _(alt, equity, mo):
    _chart = (alt.Chart(equity).mark_line().encode(
        x=alt.X("bucket:T", title=None), y=alt.Y("equity:Q", scale=alt.Scale(zero=False)), color="strategy:N")
        .properties(height=140, width=1000, title="paper equity"))
    mo.ui.altair_chart(_chart, chart_selection=False, legend_selection=False) if not equity.is_empty() \
        else mo.md("paper equity: no fills yet (a strategy that orders writes equity)")


@app.cell
def _(alt, dead_letters, health, mo):
    def _panel(field, title):
        return (alt.Chart(health).mark_line().encode(
            x=alt.X("bucket:T", title=None), y=alt.Y(f"{field}:Q", title=title), color="group_id:N")
            .properties(height=120, width=300))

    _charts = alt.hconcat(_panel("events_per_s", "events/s"), _panel("consumer_lag", "consumer lag"),
                          _panel("latency_ms_p99", "latency p99 (ms)"), title="pipeline health")
    mo.vstack([
        mo.ui.altair_chart(_charts, chart_selection=False, legend_selection=False),
        mo.md("### dead letters by reason (window)"),
        mo.ui.table(dead_letters, selection=None) if not dead_letters.is_empty() else mo.md("none"),
    ])


if __name__ == "__main__":
    app.run()
