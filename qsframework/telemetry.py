"""UAV telemetry event kinds (MAVLink, converted to SI units at the edge).

All of them share the topic ``qsf.telemetry`` (keyed by vehicle, so one vehicle's messages
stay in one partition, in order); each message says its kind in a ``kind`` header.
``key`` is the vehicle's MAVLink system id as text ("1"), ``source`` is "mavlink" (or the
emulator's name), ``seq`` counts the vehicle's decoded messages. Angles are radians except
``lat``/``lon``/``heading``/``course`` (degrees); lengths metres; speeds m/s; voltages V;
currents A. A value the vehicle reports as unknown (MAVLink's UINT16_MAX / -1 sentinels) is
null.
"""

from __future__ import annotations

import pyarrow as pa

from .events import define_kind

_f = pa.float64()
_i = pa.int64()

POSITION = define_kind(
    "position",
    [("lat", _f), ("lon", _f), ("alt", _f), ("relative_alt", _f), ("vx", _f), ("vy", _f), ("vz", _f),
     ("heading", _f)],
    topic="qsf.telemetry",
    doc="GLOBAL_POSITION_INT: lat/lon deg, alt (AMSL) and relative_alt m, vx/vy/vz m/s (NED), heading deg.",
)
GPS = define_kind(
    "gps",
    [("fix_type", _i), ("satellites", _i), ("hdop", _f), ("vdop", _f), ("lat", _f), ("lon", _f),
     ("alt", _f), ("ground_speed", _f), ("course", _f)],
    topic="qsf.telemetry",
    doc="GPS_RAW_INT: fix_type (0-1 no fix, 2 2D, 3 3D, ...), satellites, hdop/vdop, position, speed m/s, course deg.",
)
BATTERY = define_kind(
    "battery",
    [("battery_id", _i), ("voltage", _f), ("current", _f), ("remaining", _f), ("msg", pa.string())],
    topic="qsf.telemetry",
    doc="SYS_STATUS (battery_id 0, msg SYS_STATUS) or BATTERY_STATUS: voltage V, current A, remaining %.",
)
ATTITUDE = define_kind(
    "attitude",
    [("roll", _f), ("pitch", _f), ("yaw", _f), ("rollspeed", _f), ("pitchspeed", _f), ("yawspeed", _f)],
    topic="qsf.telemetry",
    doc="ATTITUDE: roll/pitch/yaw rad, rates rad/s.",
)
VIBRATION = define_kind(
    "vibration",
    [("vibe_x", _f), ("vibe_y", _f), ("vibe_z", _f), ("clipping_0", _i), ("clipping_1", _i), ("clipping_2", _i),
     ("clip_inc_0", _i), ("clip_inc_1", _i), ("clip_inc_2", _i)],
    topic="qsf.telemetry",
    doc="VIBRATION: m/s^2; clipping counts since boot and their increments since the previous "
    "message (a counter that goes down means a reboot: the increment is the new count).",
)
EKF = define_kind(
    "ekf",
    [("flags", _i), ("velocity_variance", _f), ("pos_horiz_variance", _f), ("pos_vert_variance", _f),
     ("compass_variance", _f), ("terrain_alt_variance", _f)],
    topic="qsf.telemetry",
    doc="EKF_STATUS_REPORT: flags and normalized variances (1.0 = at the failsafe limit).",
)
HEARTBEAT = define_kind(
    "heartbeat",
    [("armed", pa.bool_()), ("mode", pa.string()), ("custom_mode", _i), ("base_mode", _i),
     ("system_status", _i), ("vehicle_type", _i), ("autopilot", _i)],
    topic="qsf.telemetry",
    doc="HEARTBEAT of the vehicle: armed, flight mode name (e.g. AUTO, RTL), MAV_STATE.",
)
STATUSTEXT = define_kind(
    "statustext",
    [("severity", _i), ("text", pa.string())],
    topic="qsf.telemetry",
    doc="STATUSTEXT: MAV_SEVERITY (0 emergency .. 7 debug) and the text.",
)
FENCE = define_kind(
    "fence",
    [("breach_status", _i), ("breach_count", _i), ("breach_type", _i), ("breach_time", _i)],
    topic="qsf.telemetry",
    doc="FENCE_STATUS: breached (0/1), breach count, FENCE_BREACH type, time of last breach (ms since boot).",
)

TELEMETRY_KINDS: tuple[str, ...] = (
    "position", "gps", "battery", "attitude", "vibration", "ekf", "heartbeat", "statustext", "fence",
)
