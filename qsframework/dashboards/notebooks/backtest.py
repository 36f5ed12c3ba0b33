"""The backtest report: both legs' prices with fills and signals marked, spread and correlation,
equity and drawdown, the metrics, fills and alerts; time-range and key controls. Every series is
downsampled in DuckDB (at most 4,000 points each), so a 100M-event recording stays light.

Run: qsf dashboard backtest DIR [--recording REC]   (or: marimo run backtest.py -- --dir DIR)
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="qsf backtest")


@app.cell
def _():
    import html

    import altair as alt
    import marimo as mo
    import polars as pl

    from qsframework.dashboards import (
        dashboard_inputs,
        load_backtest,
        load_drawdown,
        load_prices,
        load_series,
    )

    WIDTH = 1000  # px of every time chart, so the panels line up
    # the time axis in UTC, as every time in qsf
    TIME = alt.X("time:T", title=None, scale=alt.Scale(type="utc"), axis=alt.Axis(format="%m-%d %H:%M"))
    return TIME, WIDTH, alt, dashboard_inputs, html, load_backtest, load_drawdown, load_prices, load_series, mo, pl


@app.cell
def _(dashboard_inputs, mo):
    inputs = dashboard_inputs(mo.cli_args())
    return (inputs,)


@app.cell
def _(inputs, load_backtest, mo):
    mo.stop(inputs["dir"] is None, mo.md("Pass the backtest directory: `qsf dashboard backtest DIR`."))
    bt = load_backtest(inputs["dir"], inputs["recording"])
    first_ns, last_ns = bt.span
    all_keys = bt.keys()
    mo.md(f"# Backtest `{bt.report.get('strategy', '?')}`\n\n"
          f"`{bt.dir}` on recording `{bt.recording or '(not found: pass --recording)'}`: "
          f"{bt.report.get('events_in', 0):,} events, {bt.report['span'].get('first')} .. "
          f"{bt.report['span'].get('last')}")
    return all_keys, bt, first_ns, last_ns


@app.cell
def _(all_keys, first_ns, last_ns, mo):
    minutes = max(1, -(-(last_ns - first_ns) // 60_000_000_000))
    time_range = mo.ui.range_slider(start=0, stop=minutes, step=1, value=[0, minutes], full_width=True,
                                    label="time range (minutes from the first event)", debounce=True)
    keys = mo.ui.multiselect(options=all_keys, value=all_keys, label="keys")
    mo.vstack([time_range, keys])
    return keys, time_range


@app.cell
def _(first_ns, last_ns, time_range):
    start = first_ns + time_range.value[0] * 60_000_000_000
    end = min(last_ns, first_ns + time_range.value[1] * 60_000_000_000)
    return end, start


@app.cell
def _(bt, html, mo):
    metrics = bt.metrics
    rows = "".join(
        f"<tr><th>{html.escape(m)}</th><td data-metric='{html.escape(m)}'>{'' if v is None else repr(v)}</td></tr>"
        for m, v in (bt.report.get("metrics") or {}).items())
    mo.vstack([mo.md("## Metrics"), mo.Html(f"<table class='qsf-metrics'>{rows}</table>")
               if rows else mo.md("No metrics: the strategy placed no orders.")])
    return (metrics,)


@app.cell
def _(bt, end, pl, start):
    def window(name):
        """Table NAME's rows in the chosen time range, with a UTC ``time`` column."""
        t = bt.tables[name]
        if t.is_empty():
            return t
        return t.filter(pl.col("ts_event").is_between(start, end)).with_columns(
            pl.from_epoch("ts_event", time_unit="ns").dt.replace_time_zone("UTC").alias("time"))
    return (window,)


@app.cell
def _(bt, end, keys, load_prices, mo, start, window):
    mo.stop(bt.recording is None, mo.md("No recording: pass `--recording DIR` for the price panels."))
    prices = load_prices(bt.recording, keys=keys.value, start=start, end=end)
    fills = window("fills")
    signals = window("signals")
    return fills, prices, signals


@app.cell
def _(TIME, WIDTH, alt, fills, keys, mo, pl, prices, signals):
    def leg(key):
        line = alt.Chart(prices.filter(pl.col("key") == key)).mark_line(strokeWidth=1).encode(
            x=TIME, y=alt.Y("price:Q", scale=alt.Scale(zero=False), title=key))
        layers = [line]
        if not fills.is_empty():
            f = fills.filter(pl.col("key") == key).with_columns(
                pl.when(pl.col("qty") > 0).then(pl.lit("buy")).otherwise(pl.lit("sell")).alias("side"))
            layers.append(alt.Chart(f).mark_point(size=70, filled=True).encode(
                x="time:T", y="price:Q",
                shape=alt.Shape("side:N", scale=alt.Scale(domain=["buy", "sell"], range=["triangle-up", "triangle-down"])),
                color=alt.Color("side:N", scale=alt.Scale(domain=["buy", "sell"], range=["#1a9850", "#d73027"])),
                tooltip=["time:T", "side:N", "qty:Q", "price:Q", "fee:Q"]))
        return alt.layer(*layers).properties(width=WIDTH, height=180)

    events = signals.filter(pl.col("name") != signals["name"].mode().first()) if not signals.is_empty() else signals
    marks = (alt.Chart(events.head(500)).mark_rule(color="#7b3294", strokeDash=[3, 3]).encode(
        x="time:T", tooltip=["time:T", "name:N", "key:N", "value:Q"]) if not events.is_empty() else None)
    legs = [leg(k) + marks if marks is not None else leg(k) for k in keys.value]
    shown = (f"<p class='qsf-range'>{prices['time'].min()} .. {prices['time'].max()}: "
             f"{prices.height:,} points of {', '.join(prices['key'].unique(maintain_order=True))}</p>") if not prices.is_empty() else ""
    mo.vstack([mo.md("## Prices (fills: triangles; other signals: dashed lines)"), mo.Html(shown),
               alt.vconcat(*legs).resolve_scale(color="shared") if legs else mo.md("Choose a key.")])
    return (leg,)


@app.cell
def _(TIME, WIDTH, alt, bt, end, load_series, mo, start):
    mo.stop(bt.tables["signals"].is_empty(), mo.md("No signals."))
    sig_path = bt.dir / "signals.parquet"
    main = bt.tables["signals"]["name"].mode().first()
    spread = load_series(sig_path, "value", where=f"name = '{main}'", start=start, end=end)
    corr = load_series(sig_path, "try_cast(json_extract_string(attrs, '$.corr') AS DOUBLE)",
                       where=f"name = '{main}' AND attrs IS NOT NULL", start=start, end=end)
    spread_chart = alt.Chart(spread).mark_line(strokeWidth=1).encode(
        x=TIME, y=alt.Y("value:Q", title=main)).properties(width=WIDTH, height=150)
    charts = [spread_chart]
    if not corr.is_empty():
        charts.append(alt.Chart(corr).mark_line(strokeWidth=1, color="#e66101").encode(
            x=TIME, y=alt.Y("value:Q", title="correlation")).properties(width=WIDTH, height=120))
    mo.vstack([mo.md(f"## {main} and correlation"), alt.vconcat(*charts)])
    return corr, spread


@app.cell
def _(TIME, WIDTH, alt, bt, end, load_drawdown, load_series, mo, start):
    mo.stop(bt.tables["equity"].is_empty(), mo.md("No equity: the strategy placed no orders."))
    eq_path = bt.dir / "equity.parquet"
    equity = load_series(eq_path, "equity", start=start, end=end)
    drawdown = load_drawdown(eq_path, start=start, end=end)
    mo.vstack([mo.md("## Equity and drawdown"), alt.vconcat(
        alt.Chart(equity).mark_line(strokeWidth=1).encode(
            x=TIME, y=alt.Y("value:Q", scale=alt.Scale(zero=False), title="equity")
        ).properties(width=WIDTH, height=150),
        alt.Chart(drawdown).mark_area(opacity=0.6, color="#d73027").encode(
            x=TIME, y=alt.Y("drawdown:Q", axis=alt.Axis(format="%"), title="drawdown")
        ).properties(width=WIDTH, height=110))])
    return drawdown, equity


@app.cell
def _(mo, window):
    tables = {name: window(name).drop("time") for name in ("fills", "alerts")}
    mo.vstack([mo.md("## Fills"), mo.ui.table(tables["fills"], selection=None, page_size=10),
               mo.md("## Alerts"), mo.ui.table(tables["alerts"], selection=None, page_size=10)])
    return (tables,)


if __name__ == "__main__":
    app.run()
