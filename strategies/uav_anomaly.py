"""UAV telemetry anomaly detection: battery, fence, GPS, vibration, EKF and link detectors.

Per vehicle (event ``key`` = MAVLink system id), each detector switchable (``battery``,
``fence``, ``gps``, ``vibration``, ``ekf``, ``link``); thresholds are named after the
ArduPilot parameters they mirror, with ArduPilot's defaults where one exists:

- battery_low: voltage < batt_low_volt (10.5 V) continuously for batt_low_timer (10 s)
  (BATT_LOW_VOLT, BATT_LOW_TIMER); critical under batt_crt_volt (BATT_CRT_VOLT, 0 = off);
  also at once when remaining < batt_low_pct / batt_crt_pct % (BATT_LOW_MAH/BATT_CRT_MAH as %).
- battery_sag: voltage falling faster than batt_sag_rate (0.3 V/s) over batt_sag_window (5 s)
  (no ArduPilot parameter).
- fence_breach: farther than fence_radius (300 m) from home, higher than fence_alt_max (100 m)
  above home, outside the fence_polygon, or FENCE_STATUS breach_status=1 (FENCE_RADIUS,
  FENCE_ALT_MAX, polygon fence); home is the first position while armed.
- fence_predicted: at the current horizontal velocity the vehicle reaches
  fence_radius - fence_margin (FENCE_MARGIN, 2 m) within fence_predict (5 s).
- gps_loss: fix_type < gps_min_fix (3 = 3D) (the EKF's GPS requirement).
- gps_degraded: satellites < gps_min_sats (6, AHRS_GPS_MINSATS) or hdop > gps_max_hdop (2.0;
  cf. GPS_HDOP_GOOD 1.4 for arming).
- gps_glitch: implied speed between consecutive fixes > gps_max_speed (50 m/s) (cf. the EKF
  glitch checks, EK3_GLITCH_RAD).
- vibration_high: any axis > vibe_warn (30 m/s^2, warning) or > vibe_crit (60 m/s^2,
  critical) (ArduPilot's vibration guidance; VIBE_* log fields).
- vibration_clipping: accelerometer clip counts rising in clip_rise (3) consecutive samples.
- ekf_variance: two or more of velocity/pos_horiz/pos_vert/compass variances >= ekf_thresh
  (0.8, FS_EKF_THRESH; 0 = off) continuously for ekf_timer (1 s, the EKF check's 10 x 100 ms).
- link_loss: no heartbeat for link_timeout (5 s, FS_GCS_TIMEOUT) of event time; a heartbeat
  after a loss gives link_restored (signal and an "info" alert). An event-time timer: the
  loss is stamped at last heartbeat + link_timeout and noticed when any later event arrives
  (attitude and statustext are subscribed for that alone); none fires after the last event.

- battery_predicted_low: the loaded voltage will be under batt_low_volt within batt_predict
  (60 s; 0 = off), from an online estimate of the pack's internal resistance and resting
  voltage (:mod:`~qsframework.strategies.uav_battery`); or, with batt_capacity (mAh,
  BATT_CAPACITY; 0 = not known) set, what remains will reach the reserve (batt_low_pct,
  else batt_reserve, 20%) within batt_predict at the recent mean current; whichever
  predicts sooner raises it (attribute ``by``); only before battery_low. The
  estimate is also the signal battery_resistance (ohm, no alert) every batt_predict.

Each anomaly emits a signal (the measured value) and an alert of the same name under the
alert policy (:mod:`qsframework.alerting`): once per episode, again when it escalates from
warning to critical, and a ``<name>_cleared`` info (signal and alert) when its condition
has been gone for clear_time (3 s) beyond the alert_hysteresis margin (10% of the
threshold; none on battery_low's voltage). Past flap_count (3) episodes within flap_window
(5 min), the further episodes of vibration, clipping, GPS quality and glitch, EKF and
predicted breach are summarised in one alert per window (``vibration_high x12 in 5 min``);
battery, fence breach, GPS loss and link events always alert. alert_persist (0 s): how long
those summarised conditions must hold before they alert.
"""

from __future__ import annotations

from typing import Any, ClassVar

from qsframework import Context, Strategy
from qsframework.strategies.uav_detectors import (
    Battery,
    Episode,
    Hold,
    Onset,
    Vehicle,
    battery_health,
    battery_low,
    battery_predicted_low,
    battery_sag,
    ekf_variance,
    fence_breach,
    fence_predicted,
    gps_degraded,
    gps_glitch,
    gps_loss,
    heartbeat,
    known,
    link_loss,
    locate,
    pending_summaries,
    vibration_clipping,
    vibration_high,
)
from qsframework.strategies.uav_params import UavAnomalyParams, parse_polygon

__all__ = ["UavAnomaly", "UavAnomalyParams", "parse_polygon"]

# the names of the state classes in snapshots (qsf process --state) saved before the detectors
# moved to uav_detectors: such a snapshot still restores
_Hold, _Episode, _Battery, _Vehicle = Hold, Episode, Battery, Vehicle


class UavAnomaly(Strategy):
    """Telemetry anomaly detectors per vehicle: battery, fence, GPS, vibration, EKF, link.
    Each handler feeds one event to its detectors (:mod:`~qsframework.strategies.uav_detectors`)
    and emits what they report, in this order."""

    kinds = ("position", "gps", "battery", "attitude", "vibration", "ekf", "heartbeat", "statustext", "fence")
    fields: ClassVar[dict[str, tuple[str, ...]]] = {
        "position": ("key", "lat", "lon", "alt", "relative_alt", "vx", "vy"),
        "gps": ("key", "fix_type", "satellites", "hdop", "lat", "lon"),
        "battery": ("key", "battery_id", "voltage", "current", "remaining"),
        "attitude": ("key",),
        "vibration": ("key", "vibe_x", "vibe_y", "vibe_z", "clip_inc_0", "clip_inc_1", "clip_inc_2"),
        "ekf": ("key", "velocity_variance", "pos_horiz_variance", "pos_vert_variance", "compass_variance"),
        "heartbeat": ("key", "armed"),
        "statustext": ("key",),
        "fence": ("key", "breach_status", "breach_type"),
    }
    Params = UavAnomalyParams
    #: each vehicle is independent: ``qsf process`` runs one engine per partition, spread over
    #: the group's members (README "Scale-out")
    scale = "key"

    def __init__(self, params: UavAnomalyParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        self._polygon = parse_polygon(params.fence_polygon)
        self._vehicles: dict[str, Vehicle] = {}

    def _vehicle(self, key: str) -> Vehicle:
        v = self._vehicles.get(key)
        if v is None:
            v = self._vehicles[key] = Vehicle(key)
        return v

    def _emit(self, v: Vehicle, onset: Onset | None) -> None:
        """Signal and alert of one onset; the dedup key is (vehicle, anomaly, onset time)."""
        if onset is None:
            return
        now = self.ctx.now
        self.ctx.signal(v.key, onset.name, onset.value, {"severity": onset.severity, **onset.attrs})
        if not onset.alert:
            return
        self.ctx.alert(
            v.key, onset.name, f"vehicle {v.key}: {onset.text}", severity=onset.severity,
            dedup_key=f"{self.name}:{v.key}:{onset.name}{onset.tag}:{now}",
        )

    def on_battery(self, b: Any) -> None:
        if not self.p.battery:
            return
        p, now, v = self.p, self.ctx.now, self._vehicle(b.key)
        bid = 0 if b.battery_id is None else b.battery_id
        bat = v.battery(bid)
        self._emit(v, battery_low(p, now, bid, bat, b.voltage, b.remaining))
        if b.voltage is not None and p.batt_sag_rate > 0:
            self._emit(v, battery_sag(p, now, bid, bat, b.voltage))
        if b.voltage is not None:
            self._emit(v, battery_health(p, now, bid, bat, b.voltage, b.current))
            self._emit(v, battery_predicted_low(p, now, bid, bat, b.remaining, b.current))

    def on_heartbeat(self, h: Any) -> None:
        """The armed state (the fence's home) and the link: each heartbeat restarts the link
        timer, which fires link_loss at last heartbeat + link_timeout."""
        v = self._vehicle(h.key)
        if h.armed is not None:
            v.arm(bool(h.armed))
        if self.p.link:
            now = self.ctx.now
            self._emit(v, heartbeat(now, v))
            timer = f"link:{v.key}"
            self.ctx.cancel(timer)
            self.ctx.at(now + self.p.link_timeout, timer)

    def on_timer(self, name: str, ts: int) -> None:
        kind, _, key = name.partition(":")
        v = self._vehicles.get(key)
        if kind == "link" and v is not None:
            self._emit(v, link_loss(self.p, ts, v))

    def on_position(self, pos: Any) -> None:
        if not self.p.fence:
            return
        p, now, v = self.p, self.ctx.now, self._vehicle(pos.key)
        predicted = locate(p, v, pos, self._polygon)
        self._emit(v, fence_breach(p, now, v))
        self._emit(v, fence_predicted(p, now, v, predicted, pos.vx, pos.vy))

    def on_fence(self, f: Any) -> None:
        if not self.p.fence:
            return
        v = self._vehicle(f.key)
        v.status_breach = (0 if f.breach_type is None else f.breach_type) if f.breach_status == 1 else None
        self._emit(v, fence_breach(self.p, self.ctx.now, v))

    def on_gps(self, g: Any) -> None:
        if not self.p.gps:
            return
        p, now, v = self.p, self.ctx.now, self._vehicle(g.key)
        fix = 0 if g.fix_type is None else g.fix_type
        self._emit(v, gps_loss(p, now, v, fix))
        self._emit(v, gps_degraded(p, now, v, fix, g.satellites, g.hdop))
        if fix >= 2 and known(g.lat, g.lon):
            self._emit(v, gps_glitch(p, now, v, g.lat, g.lon))

    def on_vibration(self, s: Any) -> None:
        if not self.p.vibration:
            return
        p, now, v = self.p, self.ctx.now, self._vehicle(s.key)
        self._emit(v, vibration_high(p, now, v, s.vibe_x, s.vibe_y, s.vibe_z))
        self._emit(v, vibration_clipping(p, now, v, s.clip_inc_0, s.clip_inc_1, s.clip_inc_2))

    def on_ekf(self, s: Any) -> None:
        p = self.p
        if not p.ekf or p.ekf_thresh <= 0:
            return
        v = self._vehicle(s.key)
        variances = (("velocity", s.velocity_variance), ("pos_horiz", s.pos_horiz_variance),
                     ("pos_vert", s.pos_vert_variance), ("compass", s.compass_variance))
        self._emit(v, ekf_variance(p, self.ctx.now, v, variances))

    def on_stop(self) -> None:
        """The flapping summaries still open at the end of the stream."""
        for v in self._vehicles.values():
            for onset in pending_summaries(self.p, self.ctx.now, v):
                self._emit(v, onset)

    def on_attitude(self, a: Any) -> None:
        """No detector: attitude events move event time, so link timers fire on them."""

    def on_statustext(self, s: Any) -> None:
        """No detector: status texts move event time, so link timers fire on them."""
