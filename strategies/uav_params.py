"""The parameters of :class:`~qsframework.strategies.uav_anomaly.UavAnomaly`: one switch per
detector and thresholds named after the ArduPilot parameters they mirror, with ArduPilot's
defaults where one exists (the strategy's docstring says what each one does)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from qsframework import Duration
from qsframework.alerting import AlertPolicy


def parse_polygon(text: str) -> tuple[tuple[float, float], ...]:
    """``"lat,lon;lat,lon;..."`` (degrees) as points; empty text means no polygon."""
    points: list[tuple[float, float]] = []
    for part in text.split(";"):
        if not part.strip():
            continue
        lat_s, sep, lon_s = part.partition(",")
        try:
            lat, lon = float(lat_s), float(lon_s)
        except ValueError:
            raise ValueError(f"fence_polygon point {part.strip()!r} is not lat,lon") from None
        if not sep or not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"fence_polygon point {part.strip()!r} is not lat,lon in degrees")
        points.append((lat, lon))
    if points and len(points) < 3:
        raise ValueError("fence_polygon needs at least 3 points (lat,lon;lat,lon;lat,lon)")
    return tuple(points)


@dataclass(frozen=True, kw_only=True)
class UavAnomalyParams:
    # switches: each detector on/off
    battery: bool = True
    fence: bool = True
    gps: bool = True
    vibration: bool = True
    ekf: bool = True
    link: bool = True
    # battery (volts, percent; 0 turns a threshold off)
    batt_low_volt: float = 10.5
    batt_low_timer: Duration = Duration("10s")  # 0 = at once (in ArduPilot 0 disables)
    batt_crt_volt: float = 0.0
    batt_low_pct: float = 0.0
    batt_crt_pct: float = 0.0
    batt_sag_rate: float = 0.3
    batt_sag_window: Duration = Duration("5s")
    batt_predict: Duration = Duration("60s")  # battery_predicted_low horizon (0 = off)
    batt_capacity: float = 0.0  # mAh (BATT_CAPACITY); 0 = not known: no capacity predictor
    batt_reserve: float = 20.0  # % the capacity predictor aims at (batt_low_pct when set)
    # fence (metres; radius/alt_max/fence_predict 0 = off)
    fence_radius: float = 300.0
    fence_alt_max: float = 100.0
    fence_margin: float = 2.0
    fence_polygon: str = ""
    fence_predict: Duration = Duration("5s")
    # GPS
    gps_min_fix: int = 3
    gps_min_sats: int = 6
    gps_max_hdop: float = 2.0
    gps_max_speed: float = 50.0
    # vibration (m/s^2)
    vibe_warn: float = 30.0
    vibe_crit: float = 60.0
    clip_rise: int = 3
    # EKF (normalized variances)
    ekf_thresh: float = 0.8
    ekf_timer: Duration = Duration("1s")
    # link
    link_timeout: Duration = Duration("5s")
    # the alert policy (qsframework.alerting) of every detector: an episode ends after
    # clear_time without its condition (beyond the alert_hysteresis margin, a fraction of
    # the threshold); past flap_count episodes within flap_window the further ones of a
    # warning-class detector are summarised once per flap_window (flap_count 0 = never);
    # alert_persist: how long those must hold before they alert
    clear_time: Duration = Duration("3s")
    alert_hysteresis: float = 0.1
    alert_persist: Duration = Duration("0s")
    flap_count: int = 3
    flap_window: Duration = Duration("5min")

    @cached_property
    def warnings(self) -> AlertPolicy:
        """The policy of the conditions that flap (vibration, clipping, GPS quality, EKF,
        predicted breach): persistence, hysteresis, flapping summarised."""
        return AlertPolicy(persistence=self.alert_persist, clear_time=self.clear_time,
                           flap_count=self.flap_count, flap_window=self.flap_window)

    @cached_property
    def events(self) -> AlertPolicy:
        """The policy of battery, fence and GPS-loss events: every episode alerts."""
        return AlertPolicy(clear_time=self.clear_time, flap_window=self.flap_window)

    def check(self) -> None:
        for name in ("batt_low_volt", "batt_crt_volt", "batt_low_pct", "batt_crt_pct", "batt_sag_rate",
                     "batt_low_timer", "fence_radius", "fence_alt_max", "fence_margin", "fence_predict",
                     "gps_min_sats", "gps_max_hdop", "gps_max_speed", "ekf_thresh", "ekf_timer", "clear_time",
                     "batt_predict", "batt_capacity", "batt_reserve", "alert_hysteresis", "alert_persist", "flap_count"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if 0 < self.batt_low_volt <= self.batt_crt_volt:
            raise ValueError("batt_crt_volt must be below batt_low_volt")
        if self.batt_low_pct > 100 or self.batt_crt_pct > 100 or self.batt_reserve >= 100:
            raise ValueError("batt_low_pct, batt_crt_pct and batt_reserve are percentages (0-100)")
        if 0 < self.batt_low_pct <= self.batt_crt_pct:
            raise ValueError("batt_crt_pct must be below batt_low_pct")
        if self.batt_sag_window <= 0 or self.link_timeout <= 0:
            raise ValueError("batt_sag_window and link_timeout must be positive")
        if self.fence_radius > 0 and self.fence_margin >= self.fence_radius:
            raise ValueError("fence_margin must be smaller than fence_radius")
        parse_polygon(self.fence_polygon)
        if not 0 <= self.gps_min_fix <= 8:
            raise ValueError("gps_min_fix is a GPS fix type (0-8; 3 = 3D)")
        if not 0 < self.vibe_warn <= self.vibe_crit:
            raise ValueError("vibe_warn must be positive and at most vibe_crit")
        if self.alert_hysteresis >= 1 or self.flap_window <= 0:
            raise ValueError("alert_hysteresis is a fraction of the threshold (0 to <1); flap_window > 0")
        if self.clip_rise < 1:
            raise ValueError("clip_rise must be at least 1")
