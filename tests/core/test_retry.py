"""The one retry policy: exponential, capped, jittered within its bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qsframework.retry import Backoff


@given(st.floats(0.01, 2.0), st.floats(1.0, 60.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0),
       st.integers(1, 80))
def test_delays_double_up_to_the_cap_within_the_jitter(initial, cap_factor, low, spread, attempt):
    cap = initial * cap_factor
    backoff = Backoff(initial_s=initial, max_s=cap, jitter=(low, low + spread))
    base = min(cap, initial * 2.0 ** (attempt - 1))  # the schedule written out
    delay = backoff.delay(attempt)
    assert base * low - 1e-12 <= delay <= base * (low + spread) + 1e-12


def test_nonsense_settings_are_refused():
    for bad in ({"initial_s": 0}, {"initial_s": 2, "max_s": 1}, {"jitter": (1.2, 0.8)}):
        with pytest.raises(ValueError):
            Backoff(**bad)
