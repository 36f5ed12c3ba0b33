"""Small but real ArduPilot DataFlash (.bin) logs for tests.

A DataFlash log is a sequence of messages ``0xA3 0x95 <type>`` + the body packed per the
type's format string; type 128 (FMT) describes itself first, then every other type before
its first use. Field formats as in ArduPilot's AP_Logger (and pymavlink's DFReader):
'L' is degE7, 'c'/'C'/'e'/'E' are value*100; the writer takes engineering values and scales.
"""

from __future__ import annotations

import struct
from pathlib import Path

START_US = 1_767_571_200_000_000  # unix time of the first GPS fix: 2026-01-05T00:00:00Z
T0_US = 20_000_000  # the autopilot's TimeUS (since boot) at that first fix
GPS_EPOCH_S = 315_964_800  # 1980-01-06 in unix seconds
LEAP_S = 18  # GPS - UTC

HEAD = b"\xa3\x95"
_STRUCT = {"b": "b", "B": "B", "h": "h", "H": "H", "i": "i", "I": "I", "f": "f", "d": "d", "n": "4s",
           "N": "16s", "Z": "64s", "c": "h", "C": "H", "e": "i", "E": "I", "L": "i", "M": "B", "q": "q", "Q": "Q"}
_SCALE = {"c": 100, "C": 100, "e": 100, "E": 100, "L": 10_000_000}

# ArduCopter 4.x formats (name: type id, format, columns)
FORMATS: dict[str, tuple[int, str, str]] = {
    "PARM": (64, "QNff", "TimeUS,Name,Value,Default"),
    "MODE": (65, "QMBB", "TimeUS,Mode,ModeNum,Rsn"),
    "ARM": (66, "QBIBB", "TimeUS,ArmState,ArmChecks,Forced,Method"),
    "EV": (67, "QB", "TimeUS,Id"),
    "MSG": (68, "QZ", "TimeUS,Message"),
    "ATT": (69, "QccccCCffB", "TimeUS,DesRoll,Roll,DesPitch,Pitch,DesYaw,Yaw,ErrRP,ErrYaw,AEKF"),
    "POS": (70, "QLLfff", "TimeUS,Lat,Lng,Alt,RelHomeAlt,RelOriginAlt"),
    "GPS": (71, "QBBIHBcLLeffffB", "TimeUS,I,Status,GMS,GWk,NSats,HDop,Lat,Lng,Alt,Spd,GCrs,VZ,Yaw,U"),
    "BAT": (72, "QBfffffcfBBB", "TimeUS,Inst,Volt,VoltR,Curr,CurrTot,EnrgTot,Temp,Res,RemPct,H,SH"),
    "VIBE": (73, "QBfffI", "TimeUS,IMU,VibeX,VibeY,VibeZ,Clip"),
    "XKF4": (74, "QBcccccfbbHBIHb", "TimeUS,C,SV,SP,SH,SM,SVT,errRP,OFN,OFE,FS,TS,SS,GPS,PI"),
    "RATE": (75, "Qffffff", "TimeUS,RDes,R,PDes,P,YDes,Y"),  # a type the importer ignores
}
# older (ArduCopter 3.x / EKF2) layouts
LEGACY: dict[str, tuple[int, str, str]] = {
    **{k: v for k, v in FORMATS.items() if k not in ("ARM", "BAT", "VIBE", "XKF4")},
    "BAT": (72, "QBfffffcf", "TimeUS,Inst,Volt,VoltR,Curr,CurrTot,EnrgTot,Temp,Res"),
    "VIBE": (73, "QfffIII", "TimeUS,VibeX,VibeY,VibeZ,Clip0,Clip1,Clip2"),
    "NKF4": (76, "QcccccfbbHBHHb", "TimeUS,SV,SP,SH,SM,SVT,errRP,OFN,OFE,FS,TS,SS,GPS,PI"),
    # ArduCopter 3.2's battery: volts and amps * 100 as integers, the board supply in mV
    "CURR": (77, "IhIhhhf", "TimeMS,ThrOut,ThrInt,Volt,Curr,Vcc,CurrTot"),
}

# the flight: (seconds after the first fix, what happens)
ARM_S, LOITER_S, AUTO_S, AUTO_AGAIN_S, RTL_S, DISARM_S, STAB_S = 10, 20, 40, 41, 90, 110, 112
GPS_LOSS = (50.0, 55.0)  # no fix, 4 satellites
CLIP_RESET_S = 60  # the clip counter goes back down (as after a reboot)


def gps_week_ms(unix_us: int) -> tuple[int, int]:
    gps_ms = (unix_us // 1000) - (GPS_EPOCH_S - LEAP_S) * 1000
    return gps_ms // (7 * 86_400_000), gps_ms % (7 * 86_400_000)


def unix_us(time_us: int) -> int:
    """The unix time (µs) of a message logged at ``time_us`` since boot."""
    return START_US + time_us - T0_US


class Writer:
    def __init__(self, formats: dict[str, tuple[int, str, str]]) -> None:
        self.formats = formats
        self.buf = bytearray()
        self._fmt(128, "FMT", "BBnNZ", "Type,Length,Name,Format,Columns")
        for name, (tid, fmt, cols) in formats.items():
            self._fmt(tid, name, fmt, cols)

    @staticmethod
    def _struct(fmt: str) -> struct.Struct:
        return struct.Struct("<" + "".join(_STRUCT[c] for c in fmt))

    def _fmt(self, tid: int, name: str, fmt: str, cols: str) -> None:
        length = 3 + self._struct(fmt).size
        self._raw(128, "BBnNZ", [tid, length, name, fmt, cols])

    def _raw(self, tid: int, fmt: str, values: list) -> None:
        packed = []
        for c, v in zip(fmt, values, strict=True):
            if c in "nNZ":
                packed.append(v.encode() if isinstance(v, str) else v)
            elif c in _SCALE:
                packed.append(round(v * _SCALE[c]))
            else:
                packed.append(v)
        self.buf += HEAD + bytes([tid]) + self._struct(fmt).pack(*packed)

    def write(self, name: str, *values) -> None:
        tid, fmt, _ = self.formats[name]
        self._raw(tid, fmt, list(values))


def attitude_deg(k: int) -> tuple[float, float, float]:
    """Roll, pitch, yaw (deg) of tick ``k`` (multiples of 0.01 deg, as logged)."""
    return ((k % 41) - 20) * 0.5, 2.5 - (k % 7) * 0.25, (90.0 + k * 0.3) % 360


def clip_count(k: int) -> int:
    return k // 20 if k < CLIP_RESET_S * 10 else (k - CLIP_RESET_S * 10) // 50 + 1


def write_dataflash(path: str | Path, seconds: int = 120, *, legacy: bool = False, sysid: int = 1,
                    curr: bool = False, batt_monitor: int | None = None) -> Path:
    """A flight of ``seconds``: 10 Hz ATT/POS, 5 Hz GPS (2 receivers), 1 Hz BAT, 2 Hz VIBE and EKF
    (2 IMUs / cores), mode and arming changes, text messages. With ``curr`` (legacy only) the
    battery is ArduCopter 3.2's CURR instead of BAT (see :func:`curr_volts`), with zeros in the
    first 5 s; ``batt_monitor`` adds that BATT_MONITOR parameter."""
    w = Writer(LEGACY if legacy else FORMATS)
    path = Path(path)
    w.write("PARM", 1000, "FRAME_CLASS", 1.0, 0.0)
    w.write("PARM", 1000, "SYSID_THISMAV", float(sysid), 1.0)
    if batt_monitor is not None:
        w.write("PARM", 1000, "BATT_MONITOR", float(batt_monitor), 4.0)
    w.write("MSG", 1000, "ArduCopter V4.5.7 (2a3dc4b7)")
    w.write("MODE", 1000, 0, 0, 0)
    events = {ARM_S: "arm", LOITER_S: 5, AUTO_S: 3, AUTO_AGAIN_S: 3, RTL_S: 6, DISARM_S: "disarm", STAB_S: 0}
    for k in range(seconds * 10):
        t = T0_US + k * 100_000
        sec, tick = divmod(k, 10)
        if tick == 0 and sec in events:
            what = events[sec]
            if isinstance(what, int):
                w.write("MODE", t, what, what, 2)
            else:
                armed = what == "arm"
                if not legacy:
                    w.write("ARM", t, int(armed), 0, 0, 0)
                w.write("EV", t, 10 if armed else 11)
        if tick == 0 and sec % 30 == 0:
            w.write("MSG", t, f"Reached waypoint #{sec // 30}")
        if k == 5:
            w.write("EV", t, 15)  # another event id: not arming
        roll, pitch, yaw = attitude_deg(k)
        w.write("ATT", t, 0.0, roll, 0.0, pitch, 0.0, yaw, 0.01, 0.02, 0)
        w.write("POS", t, 47.3977 + k * 1e-6, 8.5455 - k * 1e-6, 500.0 + k * 0.25, 20.0 + k * 0.25, 20.0)
        w.write("RATE", t, 0, 0, 0, 0, 0, 0)
        if k % 2 == 0:
            week, ms = gps_week_ms(unix_us(t))
            lost = GPS_LOSS[0] <= k / 10 < GPS_LOSS[1]
            for inst in (0, 1):
                w.write("GPS", t, inst, 1 if lost else 3, ms, week, 4 if lost else 14 + inst, 0.8, 47.3977, 8.5455,
                        512.34, 5.5, 270.0, -0.5, 0.0, 1)
        if k % 5 == 0:
            clip = clip_count(k)
            if legacy:
                w.write("VIBE", t, 10.5, 11.25, 20.0 + (k % 3), clip, 2 * clip, 0)
                w.write("NKF4", t, 0.1, 0.2, 0.05, 0.3, 0.0, 0.0, 0, 0, 0, 0, 0x1FF, 0, 0)
            else:
                for imu in (0, 1):
                    w.write("VIBE", t, imu, 10.5 + imu, 11.25, 20.0 + (k % 3), clip * (1 + imu))
                    w.write("XKF4", t, imu, 0.1, 0.2, 0.05, 0.3 + imu, 0.0, 0.0, 0, 0, 0, 0, 0x1FF, 0, 0)
        if tick == 0:
            volt = 16.5 - sec * 0.03125  # exact in float32
            if legacy and curr:
                cv, ca = curr_volts(sec)
                w.write("CURR", t // 1000, 400, 0, cv, ca, 5012, sec * 3.5)
            elif legacy:
                w.write("BAT", t, 0, volt, volt, 12.5, sec * 3.5, 0.0, 25.0, 0.01)
            else:
                w.write("BAT", t, 0, volt, volt, 12.5, sec * 3.5, 0.0, 25.0, 0.01, 100 - sec // 2, 1, 0)
                if sec % 5 == 0:
                    w.write("BAT", t, 1, 5.0, 5.0, 0.5, 0.0, 0.0, 25.0, 0.01, 90, 1, 0)
    path.write_bytes(bytes(w.buf))
    return path


def curr_volts(sec: int) -> tuple[int, int]:
    """CURR's Volt and Curr (centivolts, centiamps) at second ``sec``: zeros (no reading yet)
    for the first 5 s."""
    return (0, 0) if sec < 5 else (1650 - 3 * sec, 1250 + sec)


def modes_expected() -> list[tuple[float, bool, str]]:
    """(seconds after the first fix, armed, mode) of each change in the flight."""
    return [(-T0_US / 1e6 + 0.001, False, "STABILIZE"), (ARM_S, True, "STABILIZE"), (LOITER_S, True, "LOITER"),
            (AUTO_S, True, "AUTO"), (RTL_S, True, "RTL"), (DISARM_S, False, "RTL"), (STAB_S, False, "STABILIZE")]



def write_boot_time_log(path: str | Path, attitudes: int = 100) -> Path:
    """A log without GPS messages: its ``attitudes`` ATT messages are timed since boot (1970),
    before every validity floor."""
    w = Writer(FORMATS)
    w.write("PARM", 1000, "SYSID_THISMAV", 1.0, 1.0)
    for k in range(attitudes):
        w.write("ATT", T0_US + k * 100_000, 0.0, 1.0, 0.0, 2.0, 0.0, 90.0, 0.0, 0.0, 0)
    path = Path(path)
    path.write_bytes(bytes(w.buf))
    return path
