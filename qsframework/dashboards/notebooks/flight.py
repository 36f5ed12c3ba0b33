import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="QuantStream UAV flight")


@app.cell
def _():
    import altair as alt
    import marimo as mo
    import polars as pl

    from qsframework.dashboards import flight_loaders as F
    from qsframework.dashboards.loaders import dashboard_inputs
    return F, alt, dashboard_inputs, mo, pl


@app.cell
def _(F, dashboard_inputs, mo):
    # input: `-- --dir DIR` (a qsf sitl scenario run directory or a telemetry recording), else $QSF_DASHBOARD_DIR
    flight_dir = dashboard_inputs(mo.cli_args())["dir"]
    mo.stop(not flight_dir, mo.md("**No flight**: pass `-- --dir DIR` or set `QSF_DASHBOARD_DIR`."))
    try:
        flight = F.load_flight(flight_dir)
    except F.UserError as _exc:
        flight = None
        mo.stop(True, mo.md(f"**{_exc}**"))
    track = F.load_track(flight)
    panels = F.load_panels(flight)
    home, fence = F.home_and_fence(flight)
    alerts = F.load_flight_alerts(flight)
    faults = F.load_faults(flight)
    return alerts, faults, fence, flight, flight_dir, home, panels, track


@app.cell
def _(faults, flight, flight_dir, mo):
    _name = flight.truth.get("scenario") if flight.truth else None
    _lines = [f"# UAV flight: {_name or flight_dir}"]
    if flight.truth and flight.truth.get("description"):
        _lines.append(flight.truth["description"])
    for _f in faults.iter_rows(named=True):
        _lines.append(f"- fault **{_f['fault']}** at {_f['onset_s']:.1f} s: " + (
            f"detected as **{_f['alert']}** after **{_f['delay_s']:.3f} s**" if _f["alert"] else "**not detected**"))
    mo.md("\n".join(_lines))


@app.cell
def _(alt, fence, home, mo, pl, track):
    _scale = alt.Scale(zero=False)
    _path = alt.Chart(track).mark_line(color="#4c78a8").encode(
        x=alt.X("lon:Q", scale=_scale), y=alt.Y("lat:Q", scale=_scale), order="mission_s:Q",
        tooltip=["mission_s:Q", "relative_alt:Q"])
    _fence = alt.Chart(fence).mark_line(strokeDash=[6, 3], color="#e45756").encode(
        x="lon:Q", y="lat:Q", detail="shape:N", order="order:Q", tooltip=["shape:N"])
    _home = alt.Chart(pl.DataFrame({"lat": [home[0]], "lon": [home[1]], "what": ["home"]})).mark_point(
        shape="square", size=120, color="black", filled=True).encode(x="lon:Q", y="lat:Q", tooltip=["what:N"])
    track_chart = (_fence + _path + _home).properties(width=480, height=480, title="track, home and fence")
    mo.ui.altair_chart(track_chart, chart_selection=False, legend_selection=False)


@app.cell
def _(alerts, alt, faults, mo, panels, pl):
    _titles = {"altitude": "altitude above home (m)", "battery": "battery voltage (V) / current (A)",
               "gps": "GPS satellites / HDOP", "vibration": "vibration (m/s/s)", "ekf": "EKF variances"}
    _onsets = alt.Chart(faults.select("fault", "onset_s")).mark_rule(color="#e45756", strokeWidth=2).encode(
        x="onset_s:Q", tooltip=["fault:N", "onset_s:Q"])
    _serious = alerts.filter(pl.col("severity") != "info")
    _alerts = alt.Chart(_serious).mark_rule(color="#f58518", strokeDash=[4, 2]).encode(
        x="mission_s:Q", tooltip=["name:N", "severity:N", "mission_s:Q", "text:N"])

    def _panel(name):
        _line = alt.Chart(panels[name]).mark_line().encode(
            x=alt.X("mission_s:Q", title="mission time (s)"), y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("series:N", title=None))
        return (_line + _onsets + _alerts).properties(width=560, height=120, title=_titles[name])

    timeline = alt.vconcat(*(_panel(n) for n in panels)).resolve_scale(color="independent")
    mo.ui.altair_chart(timeline, chart_selection=False, legend_selection=False)


@app.cell
def _(alerts, faults, mo):
    mo.vstack([
        mo.md("### injected faults and detection delays (red: onset; orange: warning/critical alerts)"),
        mo.ui.table(faults, selection=None) if not faults.is_empty() else mo.md("no truth.json: no injected faults"),
        mo.md("### alerts"),
        mo.ui.table(alerts, selection=None, page_size=10) if not alerts.is_empty() else mo.md("no alerts"),
    ])


if __name__ == "__main__":
    app.run()
