"""The alert policy and the predictive battery alert on emulated flights: one alert per
vibration episode, battery_predicted_low ahead of the aged pack's failsafe, and never on
the clean or endurance flights. Expected values come from the truth record and a Polars
pass over the recorded telemetry, not from the detectors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from qsframework.adapters.mavlink.tlog import import_tlog
from qsframework.backtest import run_backtest
from qsframework.loader import load_strategy
from qsframework.recording import Recording
from qsframework.sim.vehicle.runs import RunConfig, run_scenario, score
from qsframework.sim.vehicle.scenario import Scenario
from qsframework.sim.vehicle.transports import write_tlog

START_US = 1_700_000_000_000_000
"""The tlog clock at mission time 0."""


def fly(name: str, out: Path, **overrides: str) -> tuple[dict, list[dict], Path]:
    """(truth, alerts with mission_s, recording) of the scenario flown into a tlog offline."""
    out.mkdir(parents=True, exist_ok=True)
    write_tlog(Scenario.load(name), out / "f.tlog", start_unix_us=START_US, truth=out / "truth.json")
    import_tlog(out / "f.tlog", out=out / "rec")
    res = run_backtest(load_strategy("uav_anomaly:UavAnomaly"), Recording(out / "rec"), overrides=overrides)
    alerts = res.tables["alerts"].to_pylist()
    for a in alerts:
        a["mission_s"] = round((a["ts_event"] - START_US * 1000) / 1e9, 3)
    return json.loads((out / "truth.json").read_text()), alerts, out / "rec"


def telemetry(rec: Path, kind: str) -> pl.DataFrame:
    return (pl.read_parquet(rec / f"kind={kind}" / "**" / "*.parquet")
            .with_columns(t=((pl.col("ts_event") - START_US * 1000) / 1e9))
            .sort("ts_event", "seq"))


def serious(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["severity"] in ("warning", "critical")]


def vibration_episodes(rec: Path) -> list[float]:
    """Episode starts straight off the samples: runs of peak > vibe_warn (30), a new one
    only after 3 s (clear_time) under the hysteresis margin (27)."""
    vib = telemetry(rec, "vibration").with_columns(peak=pl.max_horizontal("vibe_x", "vibe_y", "vibe_z"))
    starts, open_, ok_from = [], False, None
    for t, peak in vib.select("t", "peak").iter_rows():
        if open_:
            ok_from = None if peak > 27.0 else (t if ok_from is None else ok_from)
            if ok_from is not None and t - ok_from >= 3.0:
                open_, ok_from = False, None
        elif peak > 30.0:
            starts.append(t)
            open_ = True
    return starts


def test_vibration_flight_alerts_once_per_episode(tmp_path):
    truth, alerts, rec = fly("vibration", tmp_path)
    (fault,) = truth["faults"]
    starts = vibration_episodes(rec)
    assert len(starts) == 1 and fault["onset_s"] <= starts[0] < fault["end_s"]
    vibe = [a for a in alerts if a["name"] == "vibration_high"]
    assert vibe[0]["mission_s"] == pytest.approx(starts[0], abs=1e-6) and len(vibe) <= 2  # the onset, maybe one escalation
    assert [a["name"] for a in alerts if a["name"].endswith("_cleared")].count("vibration_high_cleared") == 1
    # all the operator gets: vibration_high (+ escalation) and clipping, nothing else
    assert {a["name"] for a in serious(alerts)} <= {"vibration_high", "vibration_clipping"}
    assert len(serious(alerts)) <= 3


def test_vibration_bursts_alert_three_then_one_summary(tmp_path):
    truth, alerts, rec = fly("vibration_bursts", tmp_path / "after")
    starts = vibration_episodes(rec)
    assert len(starts) == len(truth["faults"]) == 12
    vibe = [a for a in alerts if a["name"] == "vibration_high"]
    singles = [a["mission_s"] for a in vibe if "flapping" not in a["text"]]
    assert singles == pytest.approx(starts[:3], abs=1e-6)
    (summary,) = [a for a in vibe if "flapping" in a["text"]]
    assert summary["text"] == "vehicle 1: vibration_high x9 in 5 min (flapping around its threshold; " \
                              "summarised, not alerted one by one)"
    # the same flight without the policy's margin and summaries: one alert per burst
    _, before, _ = fly("vibration_bursts", tmp_path / "before", flap_count="0", alert_hysteresis="0")
    assert [a["mission_s"] for a in before if a["name"] == "vibration_high"] == pytest.approx(starts, abs=1e-6)
    # scored, the summarised bursts are detected by the summary (late, by design)
    report = score(truth, alerts, epoch_ns=START_US * 1000 - 20 * 10**9)
    assert report["detected"] == 12 and report["false_positives"] == []
    # (the fourth burst counts the third's alert, within the scorer's 10 s early window)
    assert [f["summarised"] for f in report["faults"]] == [False] * 4 + [True] * 8
    assert all(f["alert_s"] == summary["mission_s"] for f in report["faults"][4:])
    print(f"vibration_bursts: {len(serious(before))} warning/critical alerts without the policy, "
          f"{len(serious(alerts))} with it")


def test_aged_battery_predicted_before_the_failsafe(tmp_path):
    report = run_scenario("battery_aging", tmp_path, config=RunConfig(speedup=40))
    truth = json.loads((tmp_path / "truth.json").read_text())
    (fault,) = truth["faults"]
    assert fault["name"] == "battery_low" and fault["param"] == "BATT_LOW_VOLT"
    assert fault["failsafe_s"] == pytest.approx(fault["onset_s"] + 10.0, abs=0.15)
    # the failsafe condition from the telemetry: the first battery sample of the last run of
    # loaded voltage under 10.5 V that lasted 10 s
    bat = telemetry(tmp_path / "recording", "battery").with_columns(
        t=(pl.col("ts_event") - pl.col("ts_event").min()) / 1e9)
    rows = bat.select("t", "voltage").rows()
    low_from, condition = None, None
    for t, volt in rows:
        low_from = (low_from if low_from is not None else t) if volt < 10.5 else None
        if low_from is not None and t - low_from >= 10.0 and condition is None:
            condition = low_from
    assert condition is not None and abs(condition + 0.2 - fault["onset_s"]) <= 1.0  # first sample at 0.2 s
    (f,) = report["faults"]
    assert f["detected"] and f["alert"] == "battery_low" and report["false_positives"] == []
    assert f["warning_s"] is not None and f["warning_s"] < fault["onset_s"]  # before the condition holds
    assert f["lead_s"] >= 30.0, f  # before battery_low by at least half of batt_predict
    names = [a["name"] for a in report["alerts"]]
    assert names.count("battery_predicted_low") == 1 and names.index("battery_predicted_low") < names.index("battery_low")
    # the resistance estimate: the scenario's pack is 50 mOhm, rising toward empty
    signals = pl.read_parquet(tmp_path / "signals.parquet").filter(pl.col("name") == "battery_resistance")
    assert signals.height >= 3 and signals["value"].is_between(0.045, 0.08).all()
    print(f"battery_aging: predicted {f['lead_s']} s before battery_low "
          f"({fault['onset_s'] - f['warning_s']:.1f} s before the condition)")


def test_aged_battery_capacity_predictor_against_the_reported_remaining(tmp_path):
    # a pilot's 50% landing reserve on the aged 2000 mAh pack, the voltage predictor off: the
    # alert comes when the reserve is at most batt_predict (60 s) away, and the telemetry's
    # own remaining reaches 50% that long after it, less one 1% step (~6 s at ~12 A)
    _, alerts, rec = fly("battery_aging", tmp_path, batt_capacity="2000", batt_reserve="50", batt_low_volt="0")
    (alert,) = [a for a in alerts if a["name"] == "battery_predicted_low"]
    assert "50% reserve" in alert["text"]
    bat = telemetry(rec, "battery").filter(pl.col("msg") == "BATTERY_STATUS")
    reached = bat.filter(pl.col("remaining") <= 50.0)["t"][0]
    assert 60.0 - 7.0 <= reached - alert["mission_s"] <= 60.0


@pytest.mark.parametrize("name", ["clean", "endurance"])
def test_clean_flights_never_predict_a_low_battery(name, tmp_path):
    # the endurance box reaches 424 m from home: its fence is the scenario's 600 m
    overrides = {"fence_radius": "600", "fence_alt_max": "120"} if name == "endurance" else {}
    # the capacity predictor too, with the pack's real capacity (the endurance pack ends at 40%)
    overrides["batt_capacity"] = str(Scenario.load(name).battery.capacity_mah)
    truth, alerts, rec = fly(name, tmp_path, **overrides)
    assert truth["faults"] == []
    assert serious(alerts) == []
    bat = telemetry(rec, "battery")
    assert bat["voltage"].min() > 10.5  # the loaded voltage never came near the threshold


def test_scoring_of_an_early_warning_and_a_summary():
    at = lambda s: int((s + 20) * 1e9)  # noqa: E731 - mission s -> vehicle clock ns (boot offset 20 s)
    truth = {"mission_s": 400, "faults": [
        {"name": "battery_low", "param": "BATT_LOW_VOLT", "value": 10.5, "onset_s": 200, "end_s": 250},
        {"name": "vibration_high", "param": "SIM_ACC1_RND", "value": 30, "onset_s": 300, "end_s": 303}]}
    alerts = [
        {"name": "battery_predicted_low", "severity": "warning", "ts_event": at(90), "text": "x"},
        {"name": "battery_sag", "severity": "warning", "ts_event": at(205), "text": "x"},
        {"name": "battery_low", "severity": "warning", "ts_event": at(210), "text": "x"},
        {"name": "vibration_high", "severity": "warning", "ts_event": at(399),
         "text": "vehicle 1: vibration_high x5 in 5 min (flapping around its threshold; ...)"},
        {"name": "battery_predicted_low", "severity": "warning", "ts_event": at(20), "text": "x"},  # 180 s early
    ]
    r = score(truth, alerts, epoch_ns=0)
    battery, vibe = r["faults"]
    assert battery["detected"] and battery["alert"] == "battery_sag" and battery["warning_s"] == 90.0
    assert battery["lead_s"] == 120.0 and battery["side_effects"] == []  # to battery_low itself
    assert vibe["detected"] and vibe["summarised"] and not vibe["in_time"] and vibe["alert_s"] == 399.0
    assert [a["mission_s"] for a in r["false_positives"]] == [20.0]  # beyond twice batt_predict
