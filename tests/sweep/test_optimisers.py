"""RandomSearch and OptunaSearch: trial counts, no repeats, reproducible for a seed, only grid
points; and on the sample, ``qsf sweep --search optuna`` finds the optimum that running every
grid point (in-process backtests, computed here) shows."""

from __future__ import annotations

import itertools
import json
import zlib
from decimal import Decimal
from pathlib import Path
from subprocess import CompletedProcess

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.backtest import run_backtest
from qsframework.durations import Duration, parse_time
from qsframework.loader import load_strategy
from qsframework.recording import Recording
from qsframework.sweep.optimisers import OptunaSearch, RandomSearch

from ..conftest import ROOT
from .conftest import PAIRS, qsf

SAMPLE = ROOT / "recordings" / "sample"
END = "2026-01-05T00:40:00Z"
RANGE = "0.001:0.004:0.0005"  # a range: Optuna gets a float distribution with that step
THRESHOLDS = tuple(str(Decimal("0.001") + i * Decimal("0.0005")) for i in range(7))
WINDOWS = ("30s", "1m", "2m")  # a list: categorical

spaces = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(
        st.lists(st.integers(-5, 5), min_size=1, max_size=4, unique=True),
        st.integers(1, 4).map(lambda n: [round(0.1 * i, 1) for i in range(1, n + 1)]),
        st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=3, unique=True),
        st.just([Duration("30s"), Duration("60s"), Duration("120s")]),
    ),
    min_size=1,
).map(lambda d: {k: tuple(v) for k, v in d.items()})


def grid(space: dict) -> list[dict]:
    return [dict(zip(space, combo)) for combo in itertools.product(*space.values())]


def drain(search, chunks: list[int], value=lambda p: 0.0) -> list[dict]:
    """Ask in the given chunk sizes (cycled) until finished, telling each point's value."""
    out: list[dict] = []
    for n in itertools.cycle(chunks):
        batch = search.ask(n)
        if not batch:
            return out
        assert len(batch) <= n
        for p in batch:
            search.tell(p, value(p))
        out.extend(batch)
    raise AssertionError("unreachable")


def key(p: dict) -> str:
    return repr(sorted(p.items()))


@settings(max_examples=25, deadline=None)
@given(space=spaces, trials=st.integers(1, 40), seed=st.integers(0, 3),
       chunks=st.lists(st.integers(1, 5), min_size=1, max_size=3))
def test_random_search_draws_distinct_grid_points_reproducibly(space, trials, seed, chunks):
    points = drain(RandomSearch(space, trials, seed), chunks)
    everything = grid(space)
    assert len(points) == min(trials, len(everything))
    assert len({key(p) for p in points}) == len(points)  # no repeats
    assert all(p in everything for p in points)
    # the same seed draws the same points in the same order, whatever the chunks asked
    assert drain(RandomSearch(space, trials, seed), [1 << 20]) == points


def test_random_search_seed_changes_the_draw():
    space = {"a": tuple(range(20)), "b": tuple(range(20))}
    draws = {tuple(key(p) for p in drain(RandomSearch(space, 10, s), [10])) for s in range(3)}
    assert len(draws) == 3


@settings(max_examples=8, deadline=None)
@given(space=spaces, trials=st.integers(1, 12), seed=st.integers(0, 2))
def test_optuna_search_runs_distinct_grid_points_reproducibly(space, trials, seed):
    def value(p: dict) -> float | None:  # some points undefined: told as failed trials
        h = sum(zlib.crc32(repr(v).encode()) % 7 for v in p.values())
        return None if h % 5 == 0 else float(h)

    search = OptunaSearch(space, trials, seed, "max")
    points = drain(search, [2], value)
    everything = grid(space)
    assert len(points) == min(trials, len(everything))
    assert len({key(p) for p in points}) == len(points)
    assert all(p in everything for p in points)
    assert all(type(p[k]) is type(everything[0][k]) for p in points for k in p)  # grid's own values
    assert drain(OptunaSearch(space, trials, seed, "max"), [2], value) == points


def test_optuna_study_holds_the_metric_with_its_direction():
    """A ``min`` study gets the metric itself (the search is told it negated)."""
    space = {"a": (1, 2, 3, 4)}
    search = OptunaSearch(space, 4, 0, "min")
    drain(search, [4], lambda p: -float(p["a"]))  # signed: larger is better
    assert search.study.best_value == 1.0
    assert search.study.best_params == {"a": 1}


def independent_sharpes() -> dict[tuple[float, str], float | None]:
    """Every grid point's Sharpe from a plain in-process backtest of the window."""
    cls = load_strategy(PAIRS)
    rec = Recording(SAMPLE)
    out = {}
    for th, w in itertools.product(THRESHOLDS, WINDOWS):
        report = run_backtest(cls, rec, overrides={"threshold": th, "window": w},
                              end=parse_time(END)).report
        out[(float(th), w)] = (report.get("metrics") or {}).get("sharpe")
    return out


def sweep(tmp: Path, *extra: str) -> CompletedProcess:
    return qsf("sweep", PAIRS, "--recording", SAMPLE, "--out", tmp, "--end", END,
               "-g", f"threshold={RANGE}", "-g", f"window={','.join(WINDOWS)}", "--workers", "2", *extra)


@pytest.fixture(scope="module")
def sharpes() -> dict[tuple[float, str], float | None]:
    return independent_sharpes()


def test_cli_optuna_finds_the_grid_optimum_within_its_trials(tmp_path, sharpes):
    """8 trials over a 21-point grid (TPE finds the optimum for 6 of the seeds 0-7, where
    8 random draws would for 38% of them); the default seed 0."""
    run = sweep(tmp_path, "--search", "optuna", "--trials", "8")
    assert run.returncode == 0, run.stderr
    table = pq.read_table(tmp_path / "sweep.parquet").to_pylist()
    assert len(table) == 8
    assert len({(r["threshold"], r["window"]) for r in table}) == 8
    best = max((v, k) for k, v in sharpes.items() if v is not None)
    got = max(table, key=lambda r: r["sharpe"])
    assert (got["threshold"], got["window"]) == best[1]
    assert got["sharpe"] == best[0]
    for r in table:  # every trial's metric is the plain backtest's
        assert r["sharpe"] == sharpes[(r["threshold"], r["window"])]


def test_cli_random_search_runs_the_seeded_draw(tmp_path):
    run = sweep(tmp_path, "--search", "random", "--trials", "3", "--seed", "4")
    assert run.returncode == 0, run.stderr
    table = pq.read_table(tmp_path / "sweep.parquet")
    space = {"threshold": tuple(float(t) for t in THRESHOLDS), "window": WINDOWS}
    expected = {key(p) for p in drain(RandomSearch(space, 3, 4), [3])}
    assert {key({"threshold": r["threshold"], "window": r["window"]}) for r in table.to_pylist()} == expected
    assert json.loads(table.schema.metadata[b"qsf.params"]) == ["threshold", "window"]


@pytest.mark.parametrize("args, message", [
    (["--search", "optuna"], "--trials"),
    (["--search", "random", "--trials", "0"], "--trials"),
])
def test_cli_search_options_bad_input_is_one_line(tmp_path, args, message):
    run = sweep(tmp_path, *args)
    assert run.returncode == 2
    assert run.stderr.startswith("qsf: error:") and message in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
