"""Navigation checks: GPS quality (LogAnalyzer's GPS test), GPS glitches (jumps no copter can
fly, the EKF's glitch flag), EKF variances (FS_EKF_THRESH), the fence, and telemetry link dropouts."""

from __future__ import annotations

import polars as pl

from .flight import Flight
from .report import Check, Status, na
from .series import distance_from_m, intervals, runs, step_distance_m, with_armed

NS = 1_000_000_000
GPS_SATS_WARN, GPS_SATS_FAIL = 6, 5
"""LogAnalyzer's GPS test: fewer satellites than 6 warns, than 5 fails ..."""
GPS_HDOP_WARN, GPS_HDOP_FAIL = 3.0, 10.0
"""... an HDOP above 3 warns, above 10 fails."""
EKF_WARN = 0.5
"""An EKF variance this high shows amber in the ground stations (FS_EKF_THRESH 0.8 is red)."""
EKF_GPS_GLITCHING = 1 << 15
"""EKF_STATUS_REPORT flag: the EKF rejects GPS as glitching ..."""
NAV_GPS_GLITCHING = 1 << 14
"""... the same in a DataFlash log's XKF4/NKF4 SS (ArduPilot's nav_filter_status bits)."""
DROPOUT_S = 2.0
"""A telemetry silence this long (two heartbeat periods) is a dropout; link_timeout is a link loss."""


def gps(flight: Flight) -> Check:
    """Fix, satellites and HDOP while armed: fix lost (below gps_min_fix) or sats < 5 or HDOP > 10
    fails; sats < 6 or HDOP > 3 warns."""
    name, title, alerts = "gps", "GPS quality", ("gps_loss", "gps_degraded")
    g = flight.kind("gps")
    if g is None:
        return na(name, title, "no GPS in the log (GPS_RAW_INT/GPS)", alerts=alerts)
    g = with_armed(g, flight.kind("heartbeat")).filter(pl.col("armed"))
    if not g.height:
        return na(name, title, "no GPS sample while armed", alerts=alerts)
    min_fix = flight.params.gps_min_fix
    fixed = g.filter(pl.col("fix_type") >= min_fix)
    sats = fixed.get_column("satellites").drop_nulls()
    hdop = fixed.get_column("hdop").drop_nulls()
    min_sats = int(sats.min()) if len(sats) else None
    max_hdop = float(hdop.max()) if len(hdop) else None
    lost = runs(g, pl.col("fix_type") < min_fix, value=pl.col("fix_type"), worst="min")
    limits = {"gps_min_fix": min_fix, "sats_warn": GPS_SATS_WARN, "sats_fail": GPS_SATS_FAIL,
              "hdop_warn": GPS_HDOP_WARN, "hdop_fail": GPS_HDOP_FAIL}
    quality = f"min {min_sats if min_sats is not None else '-'} satellites, max HDOP " + (
        f"{max_hdop:.2f}" if max_hdop is not None else "-")
    bad_fail = (pl.col("satellites") < GPS_SATS_FAIL) | (pl.col("hdop") > GPS_HDOP_FAIL)
    bad_warn = (pl.col("satellites") < GPS_SATS_WARN) | (pl.col("hdop") > GPS_HDOP_WARN)
    if lost.height:
        lost_s = float((lost.get_column("end") - lost.get_column("start")).sum()) / NS
        return Check(name, title, "fail", f"fix lost {lost.height} time(s) while armed (fix below {min_fix}, "
                     f"{lost_s:.1f} s); {quality}", float(lost.height), "losses", limits,
                     tuple(intervals(lost, "no fix", digits=0)), alerts)
    for status, cond in (("fail", bad_fail), ("warn", bad_warn)):
        stretches = runs(fixed, cond, value=pl.col("hdop"))
        if stretches.height:
            return Check(name, title, status, quality, min_sats, "satellites", limits,
                         tuple(intervals(stretches, "few satellites or high HDOP", digits=2)), alerts)
    return Check(name, title, "pass", quality, min_sats, "satellites", limits, (), alerts)


def gps_glitch(flight: Flight) -> Check:
    """Consecutive fixes further apart than gps_max_speed allows, or the EKF flagging a GPS glitch."""
    name, title, alerts = "gps_glitch", "GPS glitches", ("gps_glitch",)
    g = flight.kind("gps")
    if g is None:
        return na(name, title, "no GPS in the log", alerts=alerts)
    limit = flight.params.gps_max_speed
    fixes = g.filter((pl.col("fix_type") >= 2) & pl.col("lat").is_not_null() & pl.col("lon").is_not_null()
                     & ~((pl.col("lat") == 0) & (pl.col("lon") == 0)))
    steps = fixes.with_columns(dt=(pl.col("ts_event") - pl.col("ts_event").shift(1)) / NS, dist=step_distance_m())
    steps = steps.with_columns(speed=pl.when(pl.col("dt") > 0).then(pl.col("dist") / pl.col("dt")))
    top = steps.get_column("speed").max()
    top_speed = float(top) if top is not None else 0.0
    jumps = runs(steps, pl.col("speed") > limit, value=pl.col("speed"))
    ekf = flight.kind("ekf")
    bit = NAV_GPS_GLITCHING if flight.onboard else EKF_GPS_GLITCHING
    flagged = runs(ekf, (pl.col("flags") & bit) != 0) if ekf is not None else None
    limits = {"gps_max_speed_m_per_s": limit}
    evidence = tuple(intervals(jumps, "position jump", unit=" m/s", digits=0))
    if flagged is not None:
        evidence += tuple(intervals(flagged, "EKF: GPS glitching"))
    if evidence:
        n_flag = 0 if flagged is None else flagged.height
        return Check(name, title, "fail", f"{jumps.height} jump(s) faster than {limit:g} m/s (fastest "
                     f"{top_speed:.0f} m/s), {n_flag} EKF glitch episode(s)", top_speed, "m/s", limits,
                     tuple(sorted(evidence, key=lambda e: e.start)), alerts)
    return Check(name, title, "pass", f"fastest implied speed between fixes {top_speed:.1f} m/s (limit {limit:g} m/s)",
                 top_speed, "m/s", limits, (), alerts)


_VARIANCES = ("velocity_variance", "pos_horiz_variance", "pos_vert_variance", "compass_variance")


def ekf(flight: Flight) -> Check:
    """Two or more variances at or above FS_EKF_THRESH for ekf_timer (the EKF failsafe) fails; any
    variance at or above 0.5 (or the threshold) warns."""
    name, title, alerts = "ekf", "EKF variances", ("ekf_variance",)
    e = flight.kind("ekf")
    if e is None:
        return na(name, title, "no EKF status in the log (EKF_STATUS_REPORT/XKF4/NKF4)", alerts=alerts)
    p = flight.params
    thresh, timer = p.ekf_thresh, int(p.ekf_timer)
    warn_at = min(EKF_WARN, thresh) if thresh > 0 else EKF_WARN
    cols = [c for c in _VARIANCES if c in e.columns]
    peak = e.select(pl.max_horizontal(*cols).max()).item()
    peak = float(peak) if peak is not None else 0.0
    worst_name = max(cols, key=lambda c: e.get_column(c).max() or 0.0).replace("_variance", "")
    over = pl.sum_horizontal(*[(pl.col(c) >= thresh).cast(pl.Int32) for c in cols])
    limits = {"FS_EKF_THRESH": thresh, "ekf_timer_s": timer / NS, "warn": warn_at}
    if thresh > 0:
        failsafe = runs(e, over >= 2, value=pl.max_horizontal(*cols))
        held = failsafe.filter(pl.col("held") >= timer)
        if held.height:
            return Check(name, title, "fail", f"two or more variances >= {thresh:g} for "
                         f"{float(held.get_column('held').max()) / NS:.1f} s (EKF failsafe); peak {peak:.2f} "
                         f"({worst_name})", peak, "", limits, tuple(intervals(failsafe, "variances high")), alerts)
    high = runs(e, pl.max_horizontal(*cols) >= warn_at, value=pl.max_horizontal(*cols))
    if high.height:
        return Check(name, title, "warn", f"peak variance {peak:.2f} ({worst_name}) >= {warn_at:g}", peak, "", limits,
                     tuple(intervals(high, "variance high")), alerts)
    return Check(name, title, "pass", f"peak variance {peak:.2f} ({worst_name})", peak, "", limits, (), alerts)


def fence(flight: Flight) -> Check:
    """FENCE_STATUS breaches fail; without them, when the fence's size is known (the log's
    FENCE_RADIUS / FENCE_ALT_MAX or -p), the flight against it from home (the first position
    while armed): outside fails, within fence_margin of the radius warns."""
    name, title, alerts = "fence", "Geofence", ("fence_breach", "fence_predicted")
    if flight.extras.params.get("FENCE_ENABLE", 1.0) == 0:
        return na(name, title, "the fence is disabled (FENCE_ENABLE 0)", alerts=alerts)
    p = flight.params
    limits = {"FENCE_RADIUS": p.fence_radius, "FENCE_ALT_MAX": p.fence_alt_max, "FENCE_MARGIN": p.fence_margin}
    status = flight.kind("fence")
    if status is not None:
        breaches = runs(status, pl.col("breach_status") == 1, value=pl.col("breach_type"))
        if breaches.height:
            return Check(name, title, "fail", f"{breaches.height} breach(es) reported by the vehicle (FENCE_STATUS)",
                         float(breaches.height), "breaches", limits,
                         tuple(intervals(breaches, "breach, type", digits=0)), alerts)
    pos = flight.kind("position")
    known = {"fence_radius", "fence_alt_max"} & set(flight.overrides)  # from the log's parameters or -p
    if pos is None or not known:
        if status is not None:
            return Check(name, title, "pass", "no breach reported (FENCE_STATUS)", 0.0, "breaches", limits, (), alerts)
        why = "no position" if pos is None else "no FENCE_RADIUS/FENCE_ALT_MAX parameter (give -p fence_radius=M)"
        return na(name, title, f"no fence status (FENCE_STATUS) and {why} in the log", alerts=alerts)
    armed = with_armed(pos, flight.kind("heartbeat")).filter(pl.col("armed"))
    if not armed.height:
        return na(name, title, "no position while armed (no home)", alerts=alerts)
    home_lat, home_lon = armed.item(0, "lat"), armed.item(0, "lon")
    track = armed.with_columns(dist=distance_from_m(home_lat, home_lon))
    far = float(track.get_column("dist").max())
    high = float(track.get_column("relative_alt").max() or 0.0)
    outside = (pl.col("dist") > p.fence_radius) if p.fence_radius > 0 else pl.lit(False)
    if p.fence_alt_max > 0:
        outside = outside | (pl.col("relative_alt") > p.fence_alt_max)
    out = runs(track, outside, value=pl.col("dist"))
    text = f"farthest {far:.0f} m from home, highest {high:.0f} m"
    result: Status = "pass"
    evidence = ()
    if out.height:
        result, evidence = "fail", tuple(intervals(out, "outside the fence", unit=" m", digits=0))
    elif p.fence_radius > 0 and far > p.fence_radius - p.fence_margin:
        near = runs(track, pl.col("dist") > p.fence_radius - p.fence_margin, value=pl.col("dist"))
        result, evidence = "warn", tuple(intervals(near, "within FENCE_MARGIN", unit=" m", digits=0))
    return Check(name, title, result, f"{text} (FENCE_RADIUS {p.fence_radius:g} m, FENCE_ALT_MAX "
                 f"{p.fence_alt_max:g} m)", far, "m", limits, evidence, alerts)


def link(flight: Flight) -> Check:
    """Telemetry dropouts: a heartbeat gap longer than link_timeout fails, any silence of the
    vehicle longer than 2 s warns. An onboard log has no link."""
    name, title, alerts = "link", "Telemetry link", ("link_loss", "link_restored")
    if flight.onboard:
        return na(name, title, "an onboard (DataFlash) log has no telemetry link", alerts=alerts)
    hb = flight.kind("heartbeat")
    if hb is None:
        return na(name, title, "no heartbeats in the log", alerts=alerts)
    timeout = int(flight.params.link_timeout)
    every = pl.concat([f.select("ts_event") for f in flight.frames.values() if f.height]).sort("ts_event")

    def gaps(frame: pl.DataFrame, longer: int) -> pl.DataFrame:
        g = frame.select(start=pl.col("ts_event").shift(1), end=pl.col("ts_event")).drop_nulls()
        return g.with_columns(worst=(pl.col("end") - pl.col("start")) / NS).filter(
            pl.col("end") - pl.col("start") > longer)

    losses = gaps(hb.select("ts_event"), timeout)
    silences = gaps(every, int(DROPOUT_S * NS))
    limits = {"link_timeout_s": timeout / NS, "dropout_s": DROPOUT_S}
    longest = float(silences.get_column("worst").max()) if silences.height else 0.0
    if losses.height:
        return Check(name, title, "fail", f"{losses.height} link loss(es): no heartbeat for over {timeout / NS:g} s "
                     f"(longest silence {longest:.1f} s)", longest, "s", limits,
                     tuple(intervals(losses, "no heartbeat", unit=" s", digits=1)), alerts)
    if silences.height:
        return Check(name, title, "warn", f"{silences.height} dropout(s) over {DROPOUT_S:g} s (longest {longest:.1f} s)",
                     longest, "s", limits, tuple(intervals(silences, "no telemetry", unit=" s", digits=1)), alerts)
    return Check(name, title, "pass", f"no silence over {DROPOUT_S:g} s", longest, "s", limits, (), alerts)
