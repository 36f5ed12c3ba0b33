"""The sweep dashboard: a chosen metric's heatmap over two chosen parameters, and the sweep table.

Run: qsf dashboard sweep DIR   (or: marimo run sweep.py -- --dir DIR)
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="qsf sweep")


@app.cell
def _():
    import altair as alt
    import marimo as mo

    from qsframework.dashboards import dashboard_inputs, heatmap_cells, load_sweep
    return alt, dashboard_inputs, heatmap_cells, load_sweep, mo


@app.cell
def _(dashboard_inputs, mo):
    inputs = dashboard_inputs(mo.cli_args())
    return (inputs,)


@app.cell
def _(inputs, load_sweep, mo):
    mo.stop(inputs["dir"] is None, mo.md("Pass the sweep directory: `qsf dashboard sweep DIR`."))
    sweep = load_sweep(inputs["dir"])
    mo.md(f"# Sweep `{sweep.dir}`\n\n{sweep.table.height} points over "
          f"{', '.join(f'`{p}`' for p in sweep.params)}; objective `{sweep.objective}` ({sweep.direction})")
    return (sweep,)


@app.cell
def _(mo, sweep):
    metric = mo.ui.dropdown(list(sweep.metrics), value=sweep.objective if sweep.objective in sweep.metrics
                            else sweep.metrics[0], label="metric")
    x_param = mo.ui.dropdown(list(sweep.params), value=sweep.params[0], label="x")
    y_param = mo.ui.dropdown(list(sweep.params), value=sweep.params[min(1, len(sweep.params) - 1)], label="y")
    mo.hstack([metric, x_param, y_param], justify="start")
    return metric, x_param, y_param


@app.cell
def _(alt, heatmap_cells, metric, mo, sweep, x_param, y_param):
    mo.stop(x_param.value == y_param.value, mo.md("Choose two different parameters for x and y."))
    cells = heatmap_cells(sweep, x=x_param.value, y=y_param.value, metric=metric.value)
    heatmap = (
        alt.Chart(cells)
        .mark_rect()
        .encode(
            x=alt.X(f"{x_param.value}:O", title=x_param.value),
            y=alt.Y(f"{y_param.value}:O", title=y_param.value, sort="descending"),
            color=alt.Color(f"{metric.value}:Q", title=metric.value,
                            scale=alt.Scale(scheme="redyellowgreen",
                                            reverse=sweep.direction == "min")),
            tooltip=[x_param.value, y_param.value, alt.Tooltip(f"{metric.value}:Q", format=".6g"), "points"],
        )
        .properties(width=520, height=360)
    )
    mo.vstack([mo.Html(f"<p class='qsf-heatmap'>best {metric.value} per ({x_param.value}, {y_param.value})</p>"),
               heatmap])
    return (cells,)


@app.cell
def _(mo, sweep):
    table = mo.ui.table(sweep.table, selection=None, page_size=25, label="sweep table (click a header to sort)")
    mo.output.replace(table)
    return (table,)


if __name__ == "__main__":
    app.run()
