"""Distances and polygons near a point, on the flat-earth approximation ArduPilot uses.

One constant and one formula each way, shared by the vehicle emulator (local metres ->
latitude/longitude) and the UAV detectors (latitude/longitude -> metres), so a fence drawn
in metres means the same metres on both sides, and the same as on an ArduPilot vehicle.
"""

from __future__ import annotations

from math import cos, radians

M_PER_DEG = 111_318.84502145034
"""Metres per degree of latitude: ArduPilot's ``LOCATION_SCALING_FACTOR`` (metres per 1e-7
degree, from its spherical Earth radius of 6,378,100 m) times 1e7. What a vehicle uses to
place itself and to measure fences, so a stand-in for one and a detector of one use it too."""

Polygon = tuple[tuple[float, float], ...]
"""Vertices (north-like, east-like): (lat, lon) degrees or (north, east) metres, implicitly
closed."""


def m_per_deg_lon(lat: float) -> float:
    """Metres per degree of longitude at latitude ``lat`` (degrees)."""
    return M_PER_DEG * cos(radians(lat))


def offset_ne(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    """North and east metres from (lat0, lon0) to (lat, lon), as ArduPilot's
    ``Location::get_distance_NE`` (longitude scaled at the mean latitude)."""
    north = (lat - lat0) * M_PER_DEG
    east = (lon - lon0) * M_PER_DEG * cos(radians((lat + lat0) * 0.5))
    return north, east


def offset_latlon(lat0: float, lon0: float, north: float, east: float) -> tuple[float, float]:
    """The point ``north``/``east`` metres from (lat0, lon0), as ArduPilot's
    ``Location::offset`` (longitude scaled at the mean latitude): :func:`offset_ne` inverted."""
    lat = lat0 + north / M_PER_DEG
    return lat, lon0 + east / m_per_deg_lon((lat + lat0) * 0.5)


def inside_polygon(x: float, y: float, polygon: Polygon) -> bool:
    """Even-odd ray casting: whether (x, y) lies inside ``polygon`` (same axes as the point).
    Planar: on latitude/longitude, fine for fences far smaller than a continent."""
    inside = False
    x_j, y_j = polygon[-1]
    for x_i, y_i in polygon:
        crosses = (x_i > x) != (x_j > x)
        if crosses and y < (y_j - y_i) * (x - x_i) / (x_j - x_i) + y_i:
            inside = not inside
        x_j, y_j = x_i, y_i
    return inside
