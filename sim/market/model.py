"""Seeded, vectorised simulator of Binance spot trades for research and tests.

Model, per symbol: a log price made of correlated Brownian motions (one market factor)
whose variance follows trading activity, plus occasional divergence episodes (one symbol
moves 0.3%-1.5% against the others in 2-20 s, then mean-reverts over minutes). Taker
orders arrive as a doubly stochastic Poisson process (daily seasonality, slow log-OU
activity, exponentially decaying bursts of a few hundred trades/s), each filling one or
more maker orders in the same millisecond at the bid (seller-initiated,
``is_buyer_maker``) or at the ask.

The diffusive part has the stated volatilities and a BTC/ETH correlation of 0.8; the
episodes (about 1.5 per hour per symbol) dominate the tails of 1-minute returns, so
realised 1-minute volatility is near 100% annualised and the Pearson correlation of
1-minute returns over a few hours only ~0.1-0.45 (rank correlation ~0.6).

Randomness comes from ``numpy.random.PCG64`` streams seeded with ``SeedSequence`` from
``(seed, start_ns, block index)``, one per fixed 300 s block of simulated time; the
state that crosses blocks (prices, trade ids, activity, bursts, episodes) is carried
in order. Output therefore depends only on ``(symbols as a set, minutes, seed,
start_ns)``: ``chunk_seconds`` only regroups rows, and a shorter run is a prefix of a
longer one. This module is the model (numpy columns, one block at a time); the public
entry point, which turns blocks into Arrow tables, is :mod:`qsframework.sim.market.trades`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

#: 2026-01-05T00:00:00Z in UTC nanoseconds.
DEFAULT_START_NS: int = 1_767_571_200 * 1_000_000_000

NS_PER_MS = 1_000_000
_CELL_MS = 100  # intensity and price grid step
_CELLS_PER_S = 1000 // _CELL_MS
_BLOCK_S = 300  # one RNG stream per block; independent of chunk_seconds
_G = _BLOCK_S * _CELLS_PER_S  # cells per block
BLOCK_MS = _BLOCK_S * 1000
_YEAR_S = 365.0 * 86_400.0  # crypto trades around the clock
_TICKS_PER_UNIT = 100  # price tick 0.01

# Activity: log-OU market and per-symbol factors on a 1 s grid, daily seasonality.
_MKT_TAU_S, _MKT_SD = 1800.0, 0.30
_SYM_TAU_S, _SYM_SD = 300.0, 0.25
_SEASON_AMP, _SEASON_PEAK_H = 0.20, 15.0
# Bursts: peak = mean rate * factor * lognormal(0, _BURST_SIG), decay time U(lo, hi) s.
_IDIO_BURST_RATE = 1.0 / 240.0  # per symbol per second
_MKT_BURST_RATE = 1.0 / 360.0  # per second, hits every symbol at once
_IDIO_BURST_PEAK, _MKT_BURST_PEAK, _BURST_SIG = 10.0, 8.0, 0.5
_BURST_TAU = (0.5, 4.0)
_KERNEL_TAUS = 12.0  # bursts and episodes are dropped after this many decay times
# Divergence episodes: amplitude U(0.3%, 1.5%), ramp U(2, 20) s, reversion tau U(20, 100) s,
# per symbol every U(10, 70) min (a renewal process: no hour-long droughts, 1.5/h per symbol).
_EP_GAP_S = (600.0, 4200.0)
_EPISODE_RATE = 2.0 / sum(_EP_GAP_S)  # per symbol per second
_EP_AMP = (0.003, 0.015)
_EP_RAMP_S = (2.0, 20.0)
_EP_TAU_S = (20.0, 100.0)
_EP_BURST_PEAK = (6.0, 15.0)  # times the symbol's mean rate; decay = ramp / 2 + 1 s
# Orders: fills per taker order ~ geometric with this mean; latency 1 ms + lognormal.
_MEAN_FILLS = 1.6
_LAT_FLOOR_NS, _LAT_MEDIAN_NS, _LAT_SIG = 1_000_000.0, 2_000_000.0, 0.6
_QTY_SIG = 1.4
_FILLS_PER_LEVEL = 3


def _burst_share() -> float:
    """Expected share of a symbol's mean rate that comes from bursts (by construction)."""
    ln_mean = math.exp(_BURST_SIG**2 / 2)
    tau = sum(_BURST_TAU) / 2
    idio = _IDIO_BURST_RATE * _IDIO_BURST_PEAK * ln_mean * tau
    mkt = _MKT_BURST_RATE * _MKT_BURST_PEAK * ln_mean * tau
    ep = _EPISODE_RATE * sum(_EP_BURST_PEAK) / 2 * (sum(_EP_RAMP_S) / 4 + 1.0)
    return idio + mkt + ep


_BASE_SHARE = 1.0 - _burst_share()
assert _EP_GAP_S[0] > _BLOCK_S, "at most one episode per symbol and block"


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Static parameters of one simulated symbol."""

    name: str
    price: float  # starting price
    vol: float  # annualised volatility of log price
    rate: float  # mean trades/s
    beta: float  # loading on the market factor (correlation = beta_i * beta_j)
    qty_median: float
    lot_decimals: int  # quantity step 10**-lot_decimals
    spread_ticks: int
    seq_base: int  # trade id of the first trade at DEFAULT_START_NS


_KNOWN: dict[str, tuple[float, float, float, float, float, int, int]] = {
    # name: price, vol, rate, beta, qty median, lot decimals, seq base
    "BTCUSDT": (95_000.0, 0.50, 25.0, math.sqrt(0.8), 0.002, 5, 3_000_000_000),
    "ETHUSDT": (3_300.0, 0.65, 15.0, math.sqrt(0.8), 0.03, 4, 1_800_000_000),
}


def symbol_spec(name: str) -> SymbolSpec:
    """The parameters of ``name``; unknown symbols get a price from a stable CRC32 hash."""
    name = name.strip().upper()
    if name in _KNOWN:
        price, vol, rate, beta, qmed, dec, base = _KNOWN[name]
        return SymbolSpec(name, price, vol, rate, beta, qmed, dec, 1, base)
    h = zlib.crc32(name.encode())
    price = round(20.0 * 100.0 ** (h / 2**32), 2)  # log-uniform in [20, 2000)
    qmed = 0.002 * 95_000.0 / price  # same median notional as BTCUSDT
    dec = max(0, 2 - math.floor(math.log10(qmed)))
    spread = max(1, round(price * 1e-4 * _TICKS_PER_UNIT))  # ~1 bp
    base = 100_000_000 + zlib.crc32(name.encode()[::-1]) % 900_000_000
    return SymbolSpec(name, price, 0.80, 5.0, 0.7, qmed, dec, spread, base)


def _ar1(y0: np.ndarray, phi: float, sd: float, eps: np.ndarray) -> np.ndarray:
    """Stationary AR(1) path y_k = phi y_{k-1} + sd sqrt(1-phi^2) eps_k, k = 1..n (last axis)."""
    pw = phi ** np.arange(1, eps.shape[-1] + 1)
    return pw * (y0[..., None] + np.cumsum(eps * (sd * math.sqrt(1 - phi * phi) / pw), axis=-1))


def _spans(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, index) for every integer index in [lo_i, hi_i), i.e. ragged aranges."""
    lens = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(lo)), lens)
    starts = np.cumsum(lens) - lens
    idx = np.arange(int(lens.sum())) - np.repeat(starts - lo, lens)
    return owner, idx


class Simulator:
    """Carries the state between 300 s blocks and generates one block at a time."""

    def __init__(self, names: list[str], seed: int, start_ns: int) -> None:
        self.names = names
        self.n = n = len(names)
        specs = [symbol_spec(s) for s in names]
        self.t0_ms = -(-start_ns // NS_PER_MS)  # first whole millisecond >= start_ns
        self.seed = seed
        self.skey = start_ns % 2**64
        f = np.array
        self.rate = f([s.rate for s in specs])
        self.base_rate = self.rate * _BASE_SHARE
        self.beta = f([s.beta for s in specs])
        self.sig_cell = f([s.vol for s in specs]) * math.sqrt(_CELL_MS / 1000 / _YEAR_S)
        self.spread = f([s.spread_ticks for s in specs], np.int64)
        self.uniform_spread = bool((self.spread == self.spread[0]).all())
        self.log_qmed_lots = f([math.log(s.qty_median * 10**s.lot_decimals) for s in specs])
        self.lot_div = f([10.0**s.lot_decimals for s in specs])
        elapsed_s = (start_ns - DEFAULT_START_NS) / 1e9  # trade ids grow with time
        self.next_seq = f([max(1, s.seq_base + int(s.rate * elapsed_s)) for s in specs], np.int64)
        self.x = np.log(f([s.price for s in specs]))
        init = self._rng(0)
        self.m = np.array(init.normal(0.0, _MKT_SD))
        self.u = init.normal(0.0, _SYM_SD, n)
        self.next_ep = init.random(n) * init.uniform(*_EP_GAP_S, n)  # next episode start, s
        # Active bursts (start s, peak /s, decay s, symbol) and episodes
        # (start s, ramp s, signed amplitude, reversion s, symbol); times from t0.
        self.bursts = [np.empty(0), np.empty(0), np.empty(0), np.empty(0, np.int64)]
        self.episodes = [np.empty(0)] * 4 + [np.empty(0, np.int64)]

    def _rng(self, stream: int) -> np.random.Generator:
        ss = np.random.SeedSequence(self.seed, spawn_key=(self.skey, stream))
        return np.random.Generator(np.random.PCG64(ss))

    def block(self, b: int) -> dict[str, np.ndarray]:
        """Trades of block ``b`` (times [300b, 300b+300) s after t0), in output order."""
        n, G = self.n, _G
        rng = self._rng(b + 1)
        c0 = b * G  # first cell of the block, counted from t0
        bs, be = b * float(_BLOCK_S), (b + 1) * float(_BLOCK_S)

        # Slow activity on a 1 s grid: log-OU market + symbol factors, daily seasonality.
        m = _ar1(self.m, math.exp(-1 / _MKT_TAU_S), _MKT_SD, rng.standard_normal(_BLOCK_S))
        u = _ar1(self.u, math.exp(-1 / _SYM_TAU_S), _SYM_SD, rng.standard_normal((n, _BLOCK_S)))
        self.m, self.u = m[..., -1], u[:, -1].copy()
        hours = ((self.t0_ms / 1000 + bs + np.arange(_BLOCK_S) + 0.5) % 86_400) / 3600
        season = 1 + _SEASON_AMP * np.cos(2 * np.pi * (hours - _SEASON_PEAK_H) / 24)
        slow = np.exp(m + u - (_MKT_SD**2 + _SYM_SD**2) / 2) * season
        lam = np.repeat(self.base_rate[:, None] * slow, _CELLS_PER_S, axis=1)

        # New bursts and episodes starting in this block.
        k_idio = rng.poisson(_IDIO_BURST_RATE * _BLOCK_S * n)
        k_mkt = rng.poisson(_MKT_BURST_RATE * _BLOCK_S)
        idio_sym = rng.integers(0, n, k_idio)
        idio_t = bs + rng.random(k_idio) * _BLOCK_S
        idio_peak = _IDIO_BURST_PEAK * rng.lognormal(0, _BURST_SIG, k_idio) * self.rate[idio_sym]
        idio_tau = rng.uniform(*_BURST_TAU, k_idio)
        mkt_t = np.repeat(bs + rng.random(k_mkt) * _BLOCK_S, n)
        mkt_peak = np.repeat(_MKT_BURST_PEAK * rng.lognormal(0, _BURST_SIG, k_mkt), n)
        mkt_tau = np.repeat(rng.uniform(*_BURST_TAU, k_mkt), n)
        mkt_sym = np.tile(np.arange(n), k_mkt)
        mkt_peak = mkt_peak * self.rate[mkt_sym]
        ep_sym = np.flatnonzero(self.next_ep < be)  # at most one per block: gaps > block
        ep_t = self.next_ep[ep_sym]
        k_ep = len(ep_sym)
        self.next_ep[ep_sym] += rng.uniform(*_EP_GAP_S, n)[ep_sym]
        ep_ramp = rng.uniform(*_EP_RAMP_S, k_ep)
        ep_amp = rng.uniform(*_EP_AMP, k_ep) * rng.choice([-1.0, 1.0], k_ep)
        ep_tau = rng.uniform(*_EP_TAU_S, k_ep)
        ep_peak = rng.uniform(*_EP_BURST_PEAK, k_ep) * self.rate[ep_sym]
        bt, bp, btau, bsym = (
            np.concatenate(parts)
            for parts in zip(
                self.bursts,
                (idio_t, idio_peak, idio_tau, idio_sym),
                (mkt_t, mkt_peak, mkt_tau, mkt_sym),
                (ep_t, ep_peak, ep_ramp / 2 + 1.0, ep_sym),
                strict=True,
            )
        )
        et, eramp, eamp, etau, esym = (
            np.concatenate(parts)
            for parts in zip(self.episodes, (ep_t, ep_ramp, ep_amp, ep_tau, ep_sym), strict=True)
        )

        # Bursts: exact integral of peak * exp(-(t - start)/tau) over each cell.
        bend = bt + _KERNEL_TAUS * btau
        lo = np.clip(np.floor(bt * _CELLS_PER_S).astype(np.int64) - c0, 0, G)
        hi = np.clip(np.ceil(bend * _CELLS_PER_S).astype(np.int64) - c0, 0, G)
        own, cell = _spans(lo, hi)
        ca = np.maximum((c0 + cell) / _CELLS_PER_S, bt[own])
        cb = (c0 + cell + 1) / _CELLS_PER_S
        w = (
            bp[own]
            * btau[own]
            * (np.exp((bt[own] - ca) / btau[own]) - np.exp((bt[own] - cb) / btau[own]))
        )
        lam += np.bincount(bsym[own] * G + cell, w * _CELLS_PER_S, n * G).reshape(n, G)
        keep = bend > be
        self.bursts = [bt[keep], bp[keep], btau[keep], bsym[keep]]

        # Efficient log price at the G + 1 cell boundaries; variance follows activity.
        v = np.minimum(0.4 + 0.6 * lam / self.rate[:, None], 25.0)
        z = self.beta[:, None] * rng.standard_normal(G) + np.sqrt(1 - self.beta**2)[
            :, None
        ] * rng.standard_normal((n, G))
        x = np.empty((n, G + 1))
        x[:, 0] = self.x
        np.cumsum(z * np.sqrt(v) * self.sig_cell[:, None], axis=1, out=x[:, 1:])
        x[:, 1:] += self.x[:, None]
        self.x = x[:, -1].copy()

        # Divergence episodes: linear ramp of the offset, then exponential reversion.
        eend = et + eramp + _KERNEL_TAUS * etau
        lo = np.clip(np.ceil(et * _CELLS_PER_S).astype(np.int64) - c0, 0, G + 1)
        hi = np.clip(np.floor(eend * _CELLS_PER_S).astype(np.int64) + 1 - c0, 0, G + 1)
        own, pt = _spans(lo, hi)
        dt = (c0 + pt) / _CELLS_PER_S - et[own]
        off = eamp[own] * np.where(
            dt < eramp[own], dt / eramp[own], np.exp(-(dt - eramp[own]) / etau[own])
        )
        x += np.bincount(esym[own] * (G + 1) + pt, off, n * (G + 1)).reshape(n, G + 1)
        keep = eend > be
        self.episodes = [et[keep], eramp[keep], eamp[keep], etau[keep], esym[keep]]

        # Taker orders: one Poisson process over all (symbol, cell) pairs, time-changed by
        # the cumulative intensity; sorted uniforms come from normalised exponential sums.
        lam_o = (lam * (_CELL_MS / 1000 / _MEAN_FILLS)).ravel()  # expected orders per cell
        cum_o = np.cumsum(lam_o)
        no = int(rng.poisson(cum_o[-1]))
        arr = np.cumsum(rng.standard_exponential(no + 1))
        pos = arr[:-1] * (cum_o[-1] / arr[-1])
        if no > n * G:  # locate cells by whichever side is shorter; same result
            ends = np.searchsorted(pos, cum_o, side="left")
            ends[-1] = no
            flat = np.repeat(np.arange(n * G), np.diff(ends, prepend=0))
        else:
            flat = np.minimum(np.searchsorted(cum_o, pos, side="right"), n * G - 1)
        frac = (pos - (cum_o[flat] - lam_o[flat])) / lam_o[flat]
        sub = np.clip((frac * _CELL_MS).astype(np.int64), 0, _CELL_MS - 1)
        sym, cell = np.divmod(flat, G)
        ms = cell * _CELL_MS + sub
        nfill = rng.geometric(1 / _MEAN_FILLS, no)

        # Trade ids: per symbol in time order (orders are sorted by symbol, then time).
        cum = np.cumsum(nfill) - nfill
        per_sym = np.bincount(sym, nfill, n).astype(np.int64)
        first = np.cumsum(per_sym) - per_sym
        seq0 = self.next_seq[sym] + cum - first[sym]
        self.next_seq = self.next_seq + per_sym

        # Output order (ts_event, key, seq): stable merge of the per-symbol runs.
        if n > 1:
            perm = np.argsort(ms * n + sym, kind="stable")
            ms, sym, seq0, nfill = ms[perm], sym[perm], seq0[perm], nfill[perm]

        # Prices: interpolated efficient price, bid/ask around it; order flow follows the
        # price (more buys while it rises); buyers pay the ask, sellers hit the bid.
        if n > 1:
            cell, sub = np.divmod(ms, _CELL_MS)
        i0 = sym * (G + 1) + cell
        xf = x.ravel()
        step = xf[i0 + 1] - xf[i0]
        lp = xf[i0] + ((sub + 0.5) / _CELL_MS) * step
        p_buy = 0.5 + 0.35 * np.tanh(step * (0.7 / self.sig_cell)[sym])
        buy = rng.random(no) < p_buy
        spread = self.spread[0] if self.uniform_spread else self.spread[sym]
        bid = np.floor(np.exp(lp) * _TICKS_PER_UNIT - (spread - 1) / 2).astype(np.int64)
        lat = _LAT_FLOOR_NS + rng.lognormal(math.log(_LAT_MEDIAN_NS), _LAT_SIG, no)

        # Fills: an order takes ``nfill`` makers in its millisecond, walking a tick every
        # few fills; ids continue from the order's first id.
        nf = int(nfill.sum())
        j = np.arange(nf) - np.repeat(np.cumsum(nfill) - nfill, nfill)
        sym = np.repeat(sym, nfill)
        buy = np.repeat(buy, nfill)
        level = j // _FILLS_PER_LEVEL
        ticks = np.where(
            buy,
            np.repeat(bid + spread, nfill) + level,
            np.maximum(np.repeat(bid, nfill) - level, 1),
        )
        ts = (self.t0_ms + b * BLOCK_MS + np.repeat(ms, nfill)) * NS_PER_MS
        recv = ts + np.repeat(lat.astype(np.int64), nfill) + j * 20_000
        lots = np.maximum(
            np.rint(np.exp(self.log_qmed_lots[sym] + _QTY_SIG * rng.standard_normal(nf))), 1.0
        )
        return {
            "ts_event": ts,
            "ts_recv": recv,
            "sym": sym,
            "seq": np.repeat(seq0, nfill) + j,
            "price": ticks / float(_TICKS_PER_UNIT),
            "qty": lots / self.lot_div[sym],
            "is_buyer_maker": ~buy,
        }
