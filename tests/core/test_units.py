"""Durations, times, parameters, event kinds."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qsframework import Duration, define_kind
from qsframework.durations import format_time, parse_duration, parse_time
from qsframework.events import COMMON_NAMES, KINDS, TRADE, conform
from qsframework.params import parse_overrides
from qsframework.errors import UserError


@pytest.mark.parametrize(
    ("text", "ns"),
    [("30s", 30 * 10**9), ("5m", 300 * 10**9), ("250ms", 250 * 10**6), ("1.5h", 5400 * 10**9),
     ("2", 2 * 10**9), ("10us", 10_000), ("7ns", 7), ("1d", 86400 * 10**9)],
)
def test_durations(text, ns):
    assert parse_duration(text) == ns
    assert Duration(text) == ns


@pytest.mark.parametrize("bad", ["", "soon", "5 parsecs", "-3s", "1.5ns"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.integers(0, 4_000_000_000_000_000_000))
def test_time_text_round_trips(ns):
    assert parse_time(format_time(ns)) == ns


def test_times():
    assert parse_time("2026-01-05") == 1_767_571_200_000_000_000
    assert parse_time("2026-01-05T00:00:01Z") == 1_767_571_201_000_000_000
    assert parse_time("2026-01-05T01:00:00+01:00") == 1_767_571_200_000_000_000
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_overrides():
    assert parse_overrides(["a=BTCUSDT", " window = 30s "]) == {"a": "BTCUSDT", "window": "30s"}
    with pytest.raises(UserError):
        parse_overrides(["window"])


def test_kinds_share_common_fields_and_new_kinds_register():
    for kind in KINDS.values():
        assert tuple(kind.schema.names[:5]) == COMMON_NAMES
    assert TRADE.schema.field("price").type == pa.float64()
    probe = define_kind("test_probe", [("level", pa.float32())])
    assert KINDS["test_probe"] is probe and probe.topic == "qsf.test_probes"
    assert probe.row._fields == (*COMMON_NAMES, "level")
    with pytest.raises(ValueError):
        define_kind("test_probe", [("level", pa.float64())])


def test_conform_casts_and_reports_missing_columns():
    t = pa.table({"ts_event": pa.array([1], pa.timestamp("ns", tz="UTC")), "ts_recv": [1], "source": ["s"],
                  "key": pa.array(["K"]).dictionary_encode(), "seq": [1], "price": [1.0], "qty": [2.0],
                  "is_buyer_maker": [True]})
    out = conform(t, TRADE)
    assert out.schema.equals(TRADE.schema) and out.column(0).to_pylist() == [1]
    with pytest.raises(ValueError, match="'qty'"):
        conform(t.drop(["qty"]), TRADE)


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6)), max_size=50))
def test_attrs_json_column_matches_one_by_one(values):
    from qsframework.strategy import attrs_json, attrs_json_column

    column = attrs_json_column("corr", values)
    assert column.type == pa.string()
    column.validate(full=True)
    assert column.to_pylist() == [attrs_json({"corr": v}) for v in values]


@given(st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT", "BTCUSD", "", "ÉTH", "ETHUSDTX"]), max_size=200),
       st.integers(0, 5), st.sampled_from(["string", "large_string", "dictionary"]))
def test_key_codes_match_python(values, cut, kind):
    import numpy as np

    from qsframework.strategies.accel.keycodes import key_codes

    arr = pa.array(values, pa.large_string() if kind == "large_string" else pa.string())
    if kind == "dictionary":
        arr = arr.dictionary_encode()
    arr = arr.slice(min(cut, len(values)))  # sliced arrays start at an offset
    keys = ["ETHUSDT", "BTCUSDT", "ÉTH"]
    expected = [keys.index(v) if v in keys else -1 for v in arr.to_pylist()]
    assert key_codes(arr, keys).tolist() == expected
    assert key_codes(pa.chunked_array([arr, arr], type=arr.type), keys).tolist() == expected * 2
    assert key_codes(arr, keys).dtype == np.int8


PAIR_KEYS = ["BTCUSDT", "ETHUSDT", "BTCUSD", "BTCUSDC", "", "ÉTH", "ETH", "ETHUSDTX"]


@given(st.lists(st.sampled_from(PAIR_KEYS), min_size=2, max_size=2, unique=True),
       st.lists(st.booleans(), max_size=200), st.integers(0, 5), st.booleans())
def test_pair_codes_match_exact_codes_on_two_key_columns(pair, picks, cut, large):
    """The engine's two-key shortcut gives the exact codes wherever only those keys occur."""
    from qsframework.buffers import string_buffers
    from qsframework.strategies.accel.keycodes import codes_kernel, encode_keys, pair_codes_kernel

    arr = pa.array([pair[p] for p in picks], pa.large_string() if large else pa.string())
    arr = arr.slice(min(cut, len(picks)))
    offsets, data, start, n = string_buffers(arr)
    want = encode_keys(pair)
    exact = codes_kernel(offsets, data, start, n, *want)
    assert pair_codes_kernel(offsets, data, start, n, *want).tolist() == exact.tolist()
    assert (exact >= 0).all()
