"""Event validity rules: the vectorized check agrees with a row-by-row reading of the rules."""

from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from qsframework.events import TRADE
from qsframework.validity import DEFAULT_FLOOR_NS, DEFAULT_MAX_FUTURE_NS, MAX_KEY_BYTES, check

T = 1_767_571_200_000_000_000

rows = st.lists(
    st.fixed_dictionaries({
        "ts_event": st.sampled_from([T, T + DEFAULT_MAX_FUTURE_NS, T + DEFAULT_MAX_FUTURE_NS + 1,
                                     DEFAULT_FLOOR_NS - 1, DEFAULT_FLOOR_NS, 0, 4_102_444_800 * 10**9]),
        "source": st.sampled_from(["binance", "bin\x00ance"]),
        "key": st.sampled_from(["BTCUSDT", "K" * MAX_KEY_BYTES, "K" * (MAX_KEY_BYTES + 1)]),
        "seq": st.integers(0, 10),
        "price": st.sampled_from([1.5, 0.0, -2.0, math.inf, math.nan, 95_000.0]),
        "qty": st.sampled_from([0.01, 0.0, -0.5, math.nan]),
        "is_buyer_maker": st.booleans(),
    }),
    max_size=30,
)


def _valid(r: dict) -> bool:
    """The rules, read one row at a time."""
    return (
        DEFAULT_FLOOR_NS <= r["ts_event"] <= T + DEFAULT_MAX_FUTURE_NS
        and "\x00" not in r["source"] and "\x00" not in r["key"]
        and len(r["key"].encode()) <= MAX_KEY_BYTES
        and math.isfinite(r["price"]) and r["price"] > 0
        and math.isfinite(r["qty"]) and r["qty"] > 0
    )


@given(rows)
def test_check_keeps_exactly_the_valid_rows_in_order(rs):
    table = pa.Table.from_pylist([{**r, "ts_recv": T} for r in rs], schema=TRADE.schema)
    kept, invalid = check("trade", table)
    assert kept.to_pylist() == [r for r in table.to_pylist() if _valid(r)]
    assert [i.index for i in invalid] == [i for i, r in enumerate(rs) if not _valid(r)]
    assert all(i.reason for i in invalid)


def test_reasons_name_the_rule():
    table = pa.Table.from_pylist([
        {"ts_event": T, "ts_recv": T, "source": "b", "key": "BTCUSDT", "seq": 1, "price": -1.0, "qty": 1.0,
         "is_buyer_maker": False},
        {"ts_event": 4_102_444_800 * 10**9, "ts_recv": T, "source": "b", "key": "BTCUSDT", "seq": 2,
         "price": 1.0, "qty": 1.0, "is_buyer_maker": False},
        {"ts_event": 0, "ts_recv": T, "source": "b", "key": "BTCUSDT", "seq": 3, "price": 1.0, "qty": 1.0,
         "is_buyer_maker": False},
    ], schema=TRADE.schema)
    _, invalid = check("trade", table)
    assert [i.reason for i in invalid] == [
        "price must be > 0",
        "ts_event more than 60 s ahead of ts_recv (max-future)",
        "ts_event before the floor 2000-01-01T00:00:00Z",
    ]
