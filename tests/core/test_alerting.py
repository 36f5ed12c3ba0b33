"""The alert policy (qsframework.alerting) on level sequences: one alert per episode and per
escalation, one clear per alerted episode, flapping summarised with nothing lost or doubled.
The expected episodes come from a separate pure-Python pass over the same samples."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.alerting import AlertPolicy, Condition, Transition, band

NS = 1_000_000_000


def feed(policy: AlertPolicy, samples: list[tuple[int, int, bool]]) -> list[tuple[int, Transition]]:
    cond, out = Condition(), []
    for now, level, holding in samples:
        tr = cond.update(policy, now, level, holding)
        if tr is not None:
            out.append((now, tr))
    last = cond.flush(samples[-1][0]) if samples else None
    if last is not None:
        out.append((samples[-1][0], last))
    return out


def reference_episodes(samples: list[tuple[int, int, bool]], persistence: int, clear_time: int) -> list[int]:
    """Start times of the episodes, read straight off the samples: an episode starts at the
    sample where the level has been > 0 for ``persistence``; it ends at the first sample
    ``clear_time`` after the first sample of the run of not-holding samples that follows."""
    starts: list[int] = []
    open_, bad_from, ok_from = False, None, None
    for now, level, holding in samples:
        if open_:
            if holding:
                ok_from = None
            else:
                ok_from = now if ok_from is None else ok_from
                if now - ok_from >= clear_time:
                    open_, ok_from, bad_from = False, None, None
            continue
        if level > 0:
            bad_from = now if bad_from is None else bad_from
            if now - bad_from >= persistence:
                starts.append(now)
                open_, bad_from = True, None
        else:
            bad_from = None
    return starts


samples_st = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 2), st.booleans()), min_size=1, max_size=300)


def as_samples(raw: list[tuple[int, int, bool]]) -> list[tuple[int, int, bool]]:
    """(gap s, level, extra holding) -> (time ns, level, holding = level > 0 or extra)."""
    t, out = 0, []
    for gap, level, extra in raw:
        t += gap * NS
        out.append((t, level, level > 0 or extra))
    return out


@settings(max_examples=200)
@given(raw=samples_st, persistence=st.integers(0, 5), clear=st.integers(0, 6))
def test_one_alert_per_episode_and_one_clear(raw, persistence, clear):
    samples = as_samples(raw)
    policy = AlertPolicy(persistence=persistence * NS, clear_time=clear * NS)
    got = feed(policy, samples)
    raised = [now for now, tr in got if tr.kind == "raised"]
    assert raised == reference_episodes(samples, persistence * NS, clear * NS)
    cleared = [now for now, tr in got if tr.kind == "cleared"]
    assert len(raised) - 1 <= len(cleared) <= len(raised)
    # between two onsets exactly one clear; escalations only go up within an episode
    kinds = [tr.kind for _, tr in got if tr.kind != "escalated"]
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))
    level = 0
    for _, tr in got:
        if tr.kind == "raised":
            level = tr.level
        elif tr.kind == "escalated":
            assert tr.level > level
            level = tr.level


@settings(max_examples=200)
@given(raw=samples_st, flap=st.integers(1, 4), window=st.integers(5, 60))
def test_flapping_is_summarised_nothing_lost_or_doubled(raw, flap, window):
    samples = as_samples(raw)
    policy = AlertPolicy(clear_time=2 * NS, flap_count=flap, flap_window=window * NS)
    got = feed(policy, samples)
    episodes = reference_episodes(samples, 0, 2 * NS)
    raised = [now for now, tr in got if tr.kind == "raised"]
    summarised = sum(tr.episodes for _, tr in got if tr.kind == "summary")
    assert len(raised) + summarised == len(episodes)
    # no more than flap_count onsets alerted within any flap window
    for i, t in enumerate(raised):
        assert sum(t <= u < t + window * NS for u in raised[i:]) <= flap
    # a summary never comes before the window it covers has passed (but at the end)
    for now, tr in got:
        if tr.kind == "summary" and now != samples[-1][0]:
            assert now - tr.since >= window * NS


def test_a_regular_flapper_is_summarised_once_per_window():
    # bad for 1 s every 4 s for 100 s (25 episodes): 2 alerted one by one (flap_count 2),
    # then one summary per 30 s window, and the last one flushed at the end
    samples = [(t * NS, int(t % 4 == 0), t % 4 == 0) for t in range(100)]
    got = feed(AlertPolicy(clear_time=2 * NS, flap_count=2, flap_window=30 * NS), samples)
    episodes = reference_episodes(samples, 0, 2 * NS)
    assert len(episodes) == 25
    assert [now // NS for now, tr in got if tr.kind == "raised"] == [0, 4]
    summaries = [(now // NS, tr.episodes, tr.since // NS) for now, tr in got if tr.kind == "summary"]
    # quiet episodes from t=8; a window closes at the first sample 30 s after its first one
    assert summaries == [(38, 8, 8), (70, 8, 40), (99, 7, 72)]
    assert sum(n for _, n, _ in summaries) == 23


def test_escalation_alerts_once_and_clearing_waits_out_the_hysteresis():
    policy = AlertPolicy(clear_time=3 * NS)
    cond, got = Condition(), []
    # value over time (1 s apart): 35 warn, 65 crit, 40 (still the same episode), 28 (under the
    # threshold 30 but within the 10% margin: still holding), 26 (clear), ... clear 3 s later
    values = [10, 35, 65, 40, 70, 28, 29, 28, 26, 25, 24, 23, 22]
    for i, x in enumerate(values):
        level, holding = band(x, 30.0, 60.0, 0.1, cond.level)
        tr = cond.update(policy, i * NS, level, holding)
        if tr is not None:
            got.append((i, tr.kind, tr.level))
    assert got == [(1, "raised", 1), (2, "escalated", 2), (11, "cleared", 2)]


def test_band_below_threshold_with_margin():
    assert band(10.2, 10.5, 10.0, 0.02, 0, above=False) == (1, True)
    assert band(9.9, 10.5, 10.0, 0.02, 0, above=False) == (2, True)
    assert band(10.6, 10.5, 10.0, 0.02, 1, above=False) == (0, True)  # within 10.71
    assert band(10.8, 10.5, 10.0, 0.02, 1, above=False) == (0, False)
    assert band(10.6, 10.5, 10.0, 0.02, 0, above=False) == (0, False)  # not raised: no margin


def test_persistence_delays_the_onset():
    policy = AlertPolicy(persistence=2 * NS)
    got = feed(policy, [(i * NS, 1 if 3 <= i < 5 or i >= 7 else 0, False) for i in range(12)])
    # the 3-4 run lasts 1 s < 2 s: nothing; the run from 7 alerts at 9
    assert [(now // NS, tr.kind) for now, tr in got] == [(9, "raised")]
