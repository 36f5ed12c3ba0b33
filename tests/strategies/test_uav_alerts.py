"""UavAnomaly under the alert policy on synthetic flights: a condition flapping around its
threshold alerts once per episode and is summarised, escalation alerts once, an episode
ends with one ``*_cleared`` after the hysteresis margin and clear_time, and the battery
model (resistance estimate, battery_predicted_low) on a pack with a known resistance."""

from __future__ import annotations

import pytest

from qsframework.engine import Engine
from qsframework.errors import UserError

from ..conftest import T0
from .test_uav_anomaly import SEC, UAV, Flight, run_engine, tables


def all_alerts(flight: Flight, **overrides: object) -> list[dict]:
    engine = run_engine(tables(flight), **overrides)
    rows = engine.ctx.outputs.alerts.drain().to_pylist()
    for r in rows:
        r["t"] = (r["ts_event"] - T0) / SEC
    return rows


def signals(flight: Flight, **overrides: object) -> list[dict]:
    return run_engine(tables(flight), **overrides).ctx.outputs.signals.drain().to_pylist()


def steady(**kw: object) -> Flight:
    """A flight with a battery that stays full (the default one drains over 10 min)."""
    return Flight(voltage=lambda t: 12.4, **kw)  # type: ignore[arg-type]


def vibe_of(z: object) -> object:
    return lambda t: (8.0, 9.0, z(t))  # type: ignore[operator]


def episodes_of(times: list[float], bad: list[bool], near: list[bool], clear: float) -> list[float]:
    """Independent reading of the samples: an episode starts at a bad sample while none is
    open and ends at the first sample ``clear`` s after the first sample no longer near."""
    starts, open_, ok_from = [], False, None
    for t, b, n in zip(times, bad, near, strict=True):
        if open_:
            ok_from = None if n else (t if ok_from is None else ok_from)
            if ok_from is not None and t - ok_from >= clear:
                open_, ok_from = False, None
        elif b:
            starts.append(t)
            open_ = True
    return starts


def test_vibration_wobbling_around_the_threshold_is_one_episode():
    # 31 and 28.5 m/s^2 every other second for 10 min: under 30 half the time, never under
    # the margin (27): one alert, no clear, no summary
    z = lambda t: 31.0 if int(t) % 2 == 0 else 28.5
    got = all_alerts(steady(seconds=600, vibe=vibe_of(z)))
    assert [(a["t"], a["name"], a["severity"]) for a in got] == [(0.0, "vibration_high", "warning")]
    # without the margin every dip of 1 s < clear_time (3 s) is still the same episode
    assert len(all_alerts(steady(seconds=600, vibe=vibe_of(z)), alert_hysteresis=0)) == 1


def test_flapping_vibration_alerts_per_episode_then_summarises():
    # 1 s over 30 m/s^2, then 5 s calm (20): an episode every 6 s, 100 in 10 min
    z = lambda t: 35.0 if int(t) % 6 == 0 else 20.0
    flight = steady(seconds=600, vibe=vibe_of(z))
    times = [(ts - T0) / SEC for ts in flight.times()]
    vals = [z(t) for t in times]
    episodes = episodes_of(times, [v > 30 for v in vals], [v > 27 for v in vals], 3.0)
    assert len(episodes) == 100
    got = all_alerts(flight)
    summaries = [a for a in got if "flapping" in a["text"]]
    singles = [a for a in got if a["name"] == "vibration_high" and "flapping" not in a["text"]]
    # the first flap_count (3) episodes alert one by one, each with its clear
    assert [a["t"] for a in singles] == episodes[:3]
    assert [a["t"] for a in got if a["name"] == "vibration_high_cleared"] == [e + 4.0 for e in episodes[:3]]
    # the rest: one summary per 5 min window (and the open one at the end), counting every episode
    counts = [int(a["text"].split(" x")[1].split(" ")[0]) for a in summaries]
    assert sum(counts) + len(singles) == len(episodes)
    assert len(summaries) == 2 and summaries[0]["text"].startswith("vehicle 1: vibration_high x")
    assert "in 5 min" in summaries[0]["text"]
    assert len(got) == 3 + 3 + 2  # versus 100 alerts at one per episode
    # flap_count=0: every episode alerts (and clears)
    every = all_alerts(flight, flap_count=0)
    assert [a["t"] for a in every if a["name"] == "vibration_high"] == episodes


def test_escalation_once_and_clearing_after_margin_and_clear_time():
    # warning at 10, critical at 20, back to 45 (same episode), 28 from 30 (under the 30
    # threshold but within the 10% margin), 25 from 40: cleared 3 s later (43)
    z = lambda t: 12.0 if t < 10 else 40.0 if t < 20 else 70.0 if t < 25 else 45.0 if t < 30 else 28.0 if t < 40 else 25.0
    got = all_alerts(Flight(seconds=60, vibe=vibe_of(z)))
    assert [(a["t"], a["name"], a["severity"]) for a in got] == [
        (10.0, "vibration_high", "warning"), (20.0, "vibration_high", "critical"),
        (43.0, "vibration_high_cleared", "info")]
    assert got[2]["text"] == "vehicle 1: vibration_high cleared after 30 s"
    # a longer clear_time and a persistence move the two ends
    got = all_alerts(Flight(seconds=60, vibe=vibe_of(z)), clear_time="5s", alert_persist="2s")
    assert [(a["t"], a["name"]) for a in got] == [(12.0, "vibration_high"), (20.0, "vibration_high"),
                                                  (45.0, "vibration_high_cleared")]


def test_battery_events_are_never_summarised():
    # a voltage dipping under 10.5 V for 12 s every 20 s for 10 min: 30 battery_low episodes
    volts = lambda t: 10.2 if t % 20 < 12 else 11.5
    got = all_alerts(Flight(seconds=600, voltage=volts))
    low = [a for a in got if a["name"] == "battery_low"]
    assert len(low) == 30 and all("flapping" not in a["text"] for a in low)


def pack(r: float, ocv0: float, drop: float) -> dict:
    """A pack of resistance ``r`` whose resting voltage falls ``drop`` V/s from ``ocv0``, its
    current stepping between 10 and 16 A (a vehicle manoeuvring)."""
    current = lambda t: 10.0 if int(t) % 7 < 4 else 16.0
    return {"voltage": lambda t: ocv0 - drop * t - current(t) * r, "current": current}


def test_resistance_estimate_and_predicted_low_on_a_known_pack():
    # 40 mOhm; loaded voltage at the mean current (12.57 A) reaches 10.5 V when
    # 11.8 - 0.005 t - 12.57 * 0.04 = 10.5, t = 159 s; battery_low (10 s timer, loaded at
    # 16 A under 10.5 V from about t = 120) comes later than the prediction
    spec = pack(0.04, 11.8, 0.005)
    flight = Flight(seconds=240, **spec)
    sig = signals(flight)
    health = [s for s in sig if s["name"] == "battery_resistance"]
    assert health and all(abs(s["value"] - 0.04) < 0.002 for s in health)
    got = all_alerts(flight)
    names = [(a["t"], a["name"]) for a in got if a["severity"] != "info"]
    predicted = [t for t, n in names if n == "battery_predicted_low"]
    low = [t for t, n in names if n == "battery_low"]
    assert len(predicted) == 1 and len(low) == 1 and predicted[0] < low[0]
    # the first time a 60 s look-ahead reaches the crossing at the 16 A peaks: from the
    # voltages themselves, the first t with 11.8 - 0.005 (t + 60) - 16 * 0.04 < 10.5
    first_16a_cross = min(t for t in range(240) if 11.8 - 0.005 * t - 16 * 0.04 < 10.5)
    assert predicted[0] < first_16a_cross
    # a steady pack (no fall) never predicts; batt_predict=0 switches it off
    assert not [a for a in all_alerts(Flight(seconds=240, **pack(0.04, 12.4, 0.0)))
                if a["name"].startswith("battery_predicted")]
    assert not [a for a in all_alerts(flight, batt_predict="0s") if a["name"].startswith("battery_predicted")]


def test_no_current_no_battery_model():
    flight = Flight(seconds=120, voltage=lambda t: 12.4 - 0.01 * t)
    assert [s for s in signals(flight) if s["name"] == "battery_resistance"] == []


def test_summaries_open_at_the_end_are_emitted_at_stop():
    z = lambda t: 35.0 if int(t) % 6 == 0 else 20.0
    got = all_alerts(Flight(seconds=120, vibe=vibe_of(z)))
    last = got[-1]
    assert "flapping" in last["text"] and last["t"] == 119.0
    assert int(last["text"].split(" x")[1].split(" ")[0]) == 20 - 3


def test_params_of_the_policy_are_checked():
    for overrides, needle in [({"alert_hysteresis": "1.5"}, "alert_hysteresis"),
                              ({"flap_count": "-1"}, "flap_count"), ({"batt_predict": "soon"}, "batt_predict"),
                              ({"batt_capacity": "-5"}, "batt_capacity"), ({"batt_reserve": "100"}, "batt_reserve")]:
        with pytest.raises(UserError, match=needle):
            Engine(UAV, overrides=overrides)


def draining(capacity: float, amps: float, r0: float) -> dict:
    """A steady voltage (no voltage trend) and a constant draw: what remains falls as the
    vehicle reports it, 100 (1 - consumed / capacity)."""
    return {"voltage": lambda t: 12.4, "current": lambda t: amps,
            "remaining": lambda t: r0 - amps * t / 3.6 / capacity * 100}


def predicted(flight: Flight, **overrides: object) -> list[dict]:
    return [a for a in all_alerts(flight, **overrides) if a["name"] == "battery_predicted_low"]


def test_capacity_predictor_alerts_when_the_reserve_is_batt_predict_away():
    # 3000 mAh at 15 A: 4.17 mAh/s; from 62.55% the 20% reserve is 1276.5 mAh away, 306.4 s:
    # the first sample whose time to the reserve is within 60 s, computed from the samples
    capacity, amps, r0 = 3000.0, 15.0, 62.55
    flight = Flight(seconds=360, **draining(capacity, amps, r0))
    spec = draining(capacity, amps, r0)
    want = min(t for t in range(360) if (spec["remaining"](t) - 20.0) / 100 * capacity * 3.6 / amps <= 60.0)
    got = predicted(flight, batt_capacity=str(capacity))
    assert [(a["t"], a["severity"]) for a in got] == [(float(want), "warning")]
    assert "20% reserve" in got[0]["text"] and "3000 mAh" in got[0]["text"]
    # batt_low_pct is the reserve when set: 30% is reached 72 s earlier (216 mAh less)
    want30 = min(t for t in range(360) if (spec["remaining"](t) - 30.0) / 100 * capacity * 3.6 / amps <= 60.0)
    assert [a["t"] for a in predicted(flight, batt_capacity=str(capacity), batt_low_pct="30")] == [float(want30)]
    # capacity not known: no capacity predictor (and the steady voltage predicts nothing)
    assert predicted(flight) == []


def test_the_earlier_predictor_raises_the_alert():
    spec = pack(0.04, 11.8, 0.005)  # the voltage predictor alone fires before t = 100
    by_voltage = predicted(Flight(seconds=240, **spec))
    assert len(by_voltage) == 1 and by_voltage[0]["t"] < 100
    # a capacity that lasts beyond the flight changes nothing
    lasting = Flight(seconds=240, remaining=lambda t: 90.0, **spec)
    assert predicted(lasting, batt_capacity="5000") == by_voltage
    # a small pack reaching its reserve first raises it earlier, by capacity
    small = Flight(seconds=240, remaining=lambda t: 40.0 - 0.1 * t, **spec)
    got = predicted(small, batt_capacity="1000")
    assert len(got) == 1 and got[0]["t"] < by_voltage[0]["t"] and "reserve" in got[0]["text"]
