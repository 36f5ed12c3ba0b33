"""qsframework.geo against independent computations: great-circle distances on ArduPilot's
sphere, a winding-number point-in-polygon, and the emulator's positions as a detector reads them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.geo import M_PER_DEG, inside_polygon, m_per_deg_lon, offset_latlon, offset_ne
from qsframework.sim.vehicle import Scenario, VehicleEmulator

EARTH_RADIUS_M = 6_378_100.0  # ArduPilot's RADIUS_OF_EARTH (AP_Math/location.h)

lats = st.floats(-70.0, 70.0)
lons = st.floats(-170.0, 170.0)
metres = st.floats(-5_000.0, 5_000.0)


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a sphere of ArduPilot's radius."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def winding_number(x: float, y: float, polygon: list[tuple[float, float]]) -> int:
    """Sunday's winding number of ``polygon`` around (x, y): another algorithm than ray casting."""
    wn = 0
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        cross = (x2 - x1) * (y - y1) - (x - x1) * (y2 - y1)
        if y1 <= y < y2 and cross > 0:
            wn += 1
        elif y2 <= y < y1 and cross < 0:
            wn -= 1
    return wn


def edge_distance(x: float, y: float, polygon: list[tuple[float, float]]) -> float:
    """Distance from (x, y) to the nearest edge of ``polygon``."""
    best = math.inf
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        dx, dy = x2 - x1, y2 - y1
        k = max(0.0, min(1.0, ((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy or 1.0)))
        best = min(best, math.hypot(x - x1 - k * dx, y - y1 - k * dy))
    return best


def test_metres_per_degree_is_ardupilots() -> None:
    # LOCATION_SCALING_FACTOR = 0.011131884502145034 m per 1e-7 degree: one degree of arc
    assert M_PER_DEG == pytest.approx(0.011131884502145034 * 1e7, rel=1e-15)
    assert M_PER_DEG == pytest.approx(EARTH_RADIUS_M * math.pi / 180, rel=1e-15)
    assert m_per_deg_lon(60.0) == pytest.approx(M_PER_DEG / 2, rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(lat0=lats, lon0=lons, north=metres, east=metres)
def test_offsets_match_great_circle_distances(lat0: float, lon0: float, north: float,
                                              east: float) -> None:
    lat, lon = offset_latlon(lat0, lon0, north, east)
    arc = great_circle_m(lat0, lon0, lat, lon)
    # flat earth within 7 km and 70 degrees of latitude: the great circle agrees to 1 mm per km
    assert math.hypot(north, east) == pytest.approx(arc, rel=1e-6, abs=1e-6)
    assert math.hypot(*offset_ne(lat0, lon0, lat, lon)) == pytest.approx(arc, rel=1e-6, abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(lat0=lats, lon0=lons, north=metres, east=metres)
def test_offset_latlon_inverts_offset_ne(lat0: float, lon0: float, north: float,
                                         east: float) -> None:
    n, e = offset_ne(lat0, lon0, *offset_latlon(lat0, lon0, north, east))
    assert n == pytest.approx(north, abs=1e-6) and e == pytest.approx(east, abs=1e-6)


@st.composite
def star_polygons(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Simple polygons: vertices around a centre at increasing angles, random radii."""
    k = draw(st.integers(3, 12))
    cx, cy = draw(st.floats(-100, 100)), draw(st.floats(-100, 100))
    cuts = sorted(draw(st.lists(st.floats(0, 2 * math.pi, exclude_max=True), min_size=k, max_size=k,
                                unique=True)))
    if min(b - a for a, b in zip(cuts, cuts[1:] + [cuts[0] + 2 * math.pi], strict=True)) < 1e-3:
        cuts = [2 * math.pi * i / k for i in range(k)]
    radii = draw(st.lists(st.floats(1.0, 50.0), min_size=k, max_size=k))
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(cuts, radii, strict=True)]


@settings(max_examples=400, deadline=None)
@given(polygon=star_polygons(), u=st.floats(-0.2, 1.2), v=st.floats(-0.2, 1.2))
def test_inside_polygon_agrees_with_the_winding_number(polygon: list[tuple[float, float]], u: float,
                                                       v: float) -> None:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    x = min(xs) + u * (max(xs) - min(xs))  # a point in or near the bounding box
    y = min(ys) + v * (max(ys) - min(ys))
    if edge_distance(x, y, polygon) < 1e-6:  # on an edge either answer is fine
        return
    assert inside_polygon(x, y, tuple(polygon)) == (winding_number(x, y, polygon) != 0)


def test_inside_polygon_on_a_concave_fence() -> None:
    u_shape = ((0.0, 0.0), (0.0, 30.0), (10.0, 30.0), (10.0, 10.0), (20.0, 10.0), (20.0, 30.0),
               (30.0, 30.0), (30.0, 0.0))
    assert inside_polygon(5.0, 20.0, u_shape) and inside_polygon(25.0, 20.0, u_shape)
    assert not inside_polygon(15.0, 20.0, u_shape)  # in the notch
    assert inside_polygon(15.0, 5.0, u_shape) and not inside_polygon(-1.0, 5.0, u_shape)


@settings(max_examples=40, deadline=None)
@given(north=st.floats(-7_000, 7_000), east=st.floats(-7_000, 7_000))
def test_the_emulator_reports_positions_where_they_are(north: float, east: float) -> None:
    """What the emulator puts in GLOBAL_POSITION_INT lies as far from home as it flew, on
    ArduPilot's sphere (within its 2 cm position noise and the 1e-7 degree resolution)."""
    emu = VehicleEmulator(Scenario(name="far"), seed=1, start_unix_us=1_767_571_200_000_000)
    emu.n, emu.e = north, east
    (pos,) = (m for m in emu.messages(0.0) if m.get_type() == "GLOBAL_POSITION_INT")
    lat0, lon0, _ = emu.scenario.home
    assert great_circle_m(lat0, lon0, pos.lat / 1e7, pos.lon / 1e7) == pytest.approx(
        math.hypot(north, east), abs=0.15)
