"""Battery and power checks: pack voltage against the battery failsafe, sag under load, the
board's supply (LogAnalyzer's VCC test) and a log that ends in the air (its Brownout test)."""

from __future__ import annotations

import numpy as np
import polars as pl

from .flight import Flight
from .report import Check, na
from .series import intervals, runs, with_armed

NS = 1_000_000_000
VCC_MIN = 4.6
"""LogAnalyzer's VCC test: the board's 5 V supply must stay above 4.6 V ..."""
VCC_MAX_DIFF = 0.3
"""... and vary by less than 0.3 V."""
BROWNOUT_ALT = 3.0
"""LogAnalyzer's Brownout test: a log that ends armed above 3 m ended in the air."""
MIN_CURRENT_SPREAD = 1.0
"""Amperes of current variation needed to estimate the pack's internal resistance."""


def _battery(flight: Flight) -> pl.DataFrame | None:
    """The first battery's samples with a voltage."""
    bat = flight.kind("battery")
    if bat is None:
        return None
    bat = bat.filter(pl.col("voltage").is_not_null())
    if not bat.height:
        return None
    first = bat.get_column("battery_id").fill_null(0).min()
    return bat.filter(pl.col("battery_id").fill_null(0) == first)


def battery(flight: Flight) -> Check:
    """Lowest pack voltage against BATT_LOW_VOLT (held for BATT_LOW_TIMER: the failsafe) and BATT_CRT_VOLT."""
    name, title, alerts = "battery", "Battery voltage", ("battery_low",)
    bat = _battery(flight)
    if bat is None:
        return na(name, title, "no battery voltage in the log (SYS_STATUS/BATTERY_STATUS/BAT)", alerts=alerts)
    p = flight.params
    low, crit, timer = p.batt_low_volt, p.batt_crt_volt, int(p.batt_low_timer)
    vmin = float(bat.get_column("voltage").min())
    below = runs(bat, pl.col("voltage") < low, value=pl.col("voltage"), worst="min") if low > 0 else runs(bat, pl.lit(False))
    failsafe = below.filter(pl.col("held") >= timer)
    critical = runs(bat, pl.col("voltage") < crit, value=pl.col("voltage"), worst="min") if crit > 0 else below.clear()
    limits = {"BATT_LOW_VOLT": low, "BATT_LOW_TIMER_s": timer / NS, "BATT_CRT_VOLT": crit}
    evidence = tuple(intervals(below, f"below BATT_LOW_VOLT {low:g} V", unit=" V"))
    if critical.height:
        return Check(name, title, "fail", f"min {vmin:.2f} V, below BATT_CRT_VOLT {crit:g} V", vmin, "V", limits,
                     tuple(intervals(critical, f"below BATT_CRT_VOLT {crit:g} V", unit=" V")), alerts)
    if failsafe.height:
        held = float(failsafe.get_column("held").max()) / NS
        return Check(name, title, "fail", f"min {vmin:.2f} V, below BATT_LOW_VOLT {low:g} V for {held:.1f} s "
                     f"(failsafe after {timer / NS:g} s)", vmin, "V", limits, evidence, alerts)
    if below.height:
        return Check(name, title, "warn", f"min {vmin:.2f} V, briefly below BATT_LOW_VOLT {low:g} V", vmin, "V",
                     limits, evidence, alerts)
    return Check(name, title, "pass", f"min {vmin:.2f} V (BATT_LOW_VOLT {low:g} V)", vmin, "V", limits, (), alerts)


def internal_resistance(bat: pl.DataFrame) -> float | None:
    """The pack's internal resistance (ohm) from a least-squares fit V = V0 - R*I + k*t over the
    samples with a current, None when the current hardly varies (no load steps to fit)."""
    rows = bat.filter(pl.col("current").is_not_null())
    if rows.height < 10:
        return None
    cur = rows.get_column("current").to_numpy()
    if float(cur.max() - cur.min()) < MIN_CURRENT_SPREAD:
        return None
    t = (rows.get_column("ts_event").to_numpy() - rows.item(0, "ts_event")) / NS
    design = np.column_stack([np.ones(len(cur)), cur, t])
    coef, *_ = np.linalg.lstsq(design, rows.get_column("voltage").to_numpy(), rcond=None)
    return float(-coef[1])


def battery_sag(flight: Flight) -> Check:
    """Voltage falling faster than batt_sag_rate over batt_sag_window; the internal resistance estimate."""
    name, title, alerts = "battery_sag", "Battery sag under load", ("battery_sag", "battery_predicted_low")
    bat = _battery(flight)
    if bat is None:
        return na(name, title, "no battery voltage in the log", alerts=alerts)
    p = flight.params
    window, rate = int(p.batt_sag_window), p.batt_sag_rate
    series = bat.select("ts_event", "voltage").sort("ts_event")
    earlier = series.select((pl.col("ts_event") + window).alias("ts_event"), pl.col("voltage").alias("v_before"),
                            pl.col("ts_event").alias("t_before"))
    drops = (series.join_asof(earlier, on="ts_event", strategy="backward")
             .filter(pl.col("t_before").is_not_null())
             .with_columns(drop_rate=(pl.col("v_before") - pl.col("voltage")) / (window / NS)))
    worst_rate = float(drops.get_column("drop_rate").max()) if drops.height else 0.0
    resistance = internal_resistance(bat) if "current" in bat.columns else None
    r_text = f"; internal resistance ~{resistance * 1000:.0f} mOhm" if resistance is not None else ""
    limits = {"batt_sag_rate_V_per_s": rate, "batt_sag_window_s": window / NS}
    if rate > 0 and worst_rate > rate:
        sag = runs(drops, pl.col("drop_rate") > rate, value=pl.col("drop_rate"))
        return Check(name, title, "warn", f"voltage fell {worst_rate:.2f} V/s over {window / NS:g} s "
                     f"(limit {rate:g} V/s){r_text}", worst_rate, "V/s", limits,
                     tuple(intervals(sag, "sagging", unit=" V/s")), alerts)
    return Check(name, title, "pass", f"fastest fall {max(worst_rate, 0.0):.2f} V/s over {window / NS:g} s "
                 f"(limit {rate:g} V/s){r_text}", max(worst_rate, 0.0), "V/s", limits, (), alerts)


def vcc(flight: Flight) -> Check:
    """LogAnalyzer's VCC test on POWER_STATUS / POWR: min below 4.6 V fails, a spread over 0.3 V warns."""
    name, title = "vcc", "Board supply (VCC)"
    power = flight.extras.power
    if power is None or not power.height:
        return na(name, title, "no board supply voltage in the log (POWER_STATUS/POWR)")
    v = power.get_column("vcc")
    lo, hi = float(v.min()), float(v.max())
    limits = {"vcc_min_V": VCC_MIN, "vcc_max_diff_V": VCC_MAX_DIFF}
    low = runs(power, pl.col("vcc") < VCC_MIN, value=pl.col("vcc"), worst="min")
    if lo < VCC_MIN:
        return Check(name, title, "fail", f"VCC fell to {lo:.2f} V (minimum {VCC_MIN:g} V): brownout risk", lo, "V",
                     limits, tuple(intervals(low, f"below {VCC_MIN:g} V", unit=" V")))
    if hi - lo > VCC_MAX_DIFF:
        return Check(name, title, "warn", f"VCC varied by {hi - lo:.2f} V ({lo:.2f}..{hi:.2f} V; should be < "
                     f"{VCC_MAX_DIFF:g} V)", hi - lo, "V", limits)
    return Check(name, title, "pass", f"VCC {lo:.2f}..{hi:.2f} V", lo, "V", limits)


def brownout(flight: Flight) -> Check:
    """LogAnalyzer's Brownout test: the log must not end armed above 3 m (power lost in the air)."""
    name, title = "brownout", "Log ends on the ground"
    hb, pos = flight.kind("heartbeat"), flight.kind("position")
    if hb is None or pos is None or pos.get_column("relative_alt").drop_nulls().is_empty():
        return na(name, title, "needs the armed state (HEARTBEAT/ARM) and the altitude (GLOBAL_POSITION_INT/POS)")
    last = with_armed(pos.filter(pl.col("relative_alt").is_not_null()), hb).tail(1)
    alt, armed = float(last.item(0, "relative_alt")), bool(last.item(0, "armed"))
    limits = {"final_alt_max_m": BROWNOUT_ALT}
    end = int(last.item(0, "ts_event"))
    if armed and alt > BROWNOUT_ALT:
        from .series import Interval

        return Check(name, title, "fail", f"the log ends armed at {alt:.1f} m: power lost or log truncated in flight",
                     alt, "m", limits, (Interval(end, end, f"last altitude {alt:.1f} m, armed"),))
    state = "armed" if armed else "disarmed"
    return Check(name, title, "pass", f"the log ends {state} at {alt:.1f} m", alt, "m", limits)
