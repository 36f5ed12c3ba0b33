"""Compiled batch path of strategies/btc_eth_spread.py (numba, no fast-math).

The kernel repeats the per-event handlers statement for statement, with IEEE double
arithmetic and the C library's log, so it reproduces them bit for bit; it lives in an
importable module so numba can cache the compiled code between runs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qsframework.keycodes import pair_codes_kernel

DIVERGENCE, SPREAD = 0, 1


def kernel_ready(kernel, *args) -> bool:
    """Whether numba ``kernel`` runs on ``args`` without compiling: compiled in this process
    already, or in its on-disk cache (then loaded now, which takes milliseconds)."""
    sig = tuple(kernel.typeof_pyval(a) for a in args)
    if sig in kernel.overloads:
        return True
    cache = getattr(kernel, "_cache", None)  # numba's per-function disk cache (cache=True)
    if cache is None or cache.load_overload(sig, kernel.targetctx) is None:
        return False
    kernel.compile(sig)  # found: load it into the dispatcher as a call would
    return True


@njit(cache=True, inline="always")
def _advance(ts, px, head, end, cut, lag):  # pragma: no cover - compiled
    """SpreadCore.advance for one leg: trades at or before ``cut`` leave; the last is the lag."""
    while head < end and ts[head] <= cut:
        lag = px[head]
        head += 1
    return head, lag


@njit(cache=True, nogil=True, error_model="numpy")
def spread_kernel(ts, price, key_offsets, key_data, key_start, want_offsets, want_data,
                  ca_ts, ca_px, cb_ts, cb_px, fire_t, fire_pos, f, i, ring,
                  w, thr, rearm_at, band, first, out_kind, out_ts, out_val, out_corr):  # pragma: no cover
    """SpreadCore.on_trade and .grid, statement for statement, over one batch.

    Rows are matched to legs a (code 0) and b (code 1) from the key column's buffers;
    each leg's trades are the carried ones (``ca_*``, ``cb_*``) then this batch's. Returns
    the number of output records and the legs' trade arrays (``i[1]``/``i[2]`` index the
    first still inside the window).

    f: last_a, last_b, lag_a, lag_b, sa, sb, saa, sbb, sab, prev_a, prev_b (NaN = none)
    i: armed, head_a, head_b, valid, nza, nzb, have_prev, ring count
    ring: the window's returns (oldest first), rebuilt in place on return.
    band: SpreadCore's fire_lo, fire_hi, rearm_lo, rearm_hi (the ratio pre-check).
    """
    last_a, last_b, lag_a, lag_b = f[0], f[1], f[2], f[3]
    sa, sb, saa, sbb, sab, prev_a, prev_b = f[4], f[5], f[6], f[7], f[8], f[9], f[10]
    armed = i[0] == 1
    valid, nza, nzb, have_prev, count = i[3], i[4], i[5], i[6] == 1, i[7]
    n = ring.shape[1]
    ra_buf, rb_buf, ok_buf = ring[0].copy(), ring[1].copy(), ring[2].copy()
    head = 0  # oldest entry of the ring
    ha, hb = 0, 0  # first trade of each leg still inside the window
    # rows are only ever a or b: the engine hands a strategy just the keys() it asked for
    leg = pair_codes_kernel(key_offsets, key_data, key_start, len(ts), want_offsets, want_data)
    na, nb = len(ca_ts), len(cb_ts)
    in_a = 0
    for r in range(len(ts)):
        in_a += leg[r] == 0
    a_ts = np.empty(na + in_a, np.int64)  # carried trades, then the batch's (gathered below)
    a_px = np.empty(len(a_ts))
    b_ts = np.empty(nb + len(ts) - in_a, np.int64)
    b_px = np.empty(len(b_ts))
    a_ts[:na], a_px[:na], b_ts[:nb], b_px[:nb] = ca_ts, ca_px, cb_ts, cb_px
    ja, jb = na, nb
    for r in range(len(ts)):
        if leg[r] == 0:
            a_ts[ja], a_px[ja] = ts[r], price[r]
            ja += 1
        elif leg[r] == 1:
            b_ts[jb], b_px[jb] = ts[r], price[r]
            jb += 1
    fire_lo, fire_hi, rearm_lo, rearm_hi = band[0], band[1], band[2], band[3]
    k = 0  # next fire
    out = 0
    nf = len(fire_t)
    for r in range(len(ts) + 1):
        while k < nf and fire_pos[k] == r:  # on_timer(T): advance, then sample
            T = fire_t[k]
            k += 1
            ha, lag_a = _advance(a_ts, a_px, ha, na, T - w, lag_a)
            hb, lag_b = _advance(b_ts, b_px, hb, nb, T - w, lag_b)
            if have_prev and prev_a == prev_a and prev_b == prev_b and last_a == last_a and last_b == last_b:
                ra, rb, ok = np.log(last_a / prev_a), np.log(last_b / prev_b), 1.0
            else:
                ra, rb, ok = 0.0, 0.0, 0.0
            if count == n:
                ra_o, rb_o, ok_o = ra_buf[head], rb_buf[head], ok_buf[head]
                slot = head
                head = (head + 1) % n
            else:
                ra_o, rb_o, ok_o = 0.0, 0.0, 0.0
                slot = (head + count) % n
                count += 1
            sa += ra - ra_o
            sb += rb - rb_o
            saa += ra * ra - ra_o * ra_o
            sbb += rb * rb - rb_o * rb_o
            sab += ra * rb - ra_o * rb_o
            valid += int(ok) - int(ok_o)
            nza += int(ra != 0.0) - int(ra_o != 0.0)
            nzb += int(rb != 0.0) - int(rb_o != 0.0)
            ra_buf[slot], rb_buf[slot], ok_buf[slot] = ra, rb, ok
            have_prev, prev_a, prev_b = True, last_a, last_b
            if T <= first or lag_a != lag_a or lag_b != lag_b:
                continue
            corr = np.nan
            if valid >= n and nza > 0 and nzb > 0:
                va = saa - sa * sa / n
                vb = sbb - sb * sb / n
                if va > 0.0 and vb > 0.0:
                    corr = max(-1.0, min(1.0, (sab - sa * sb / n) / np.sqrt(va * vb)))
            value = np.log(last_a / lag_a) - np.log(last_b / lag_b)
            out_kind[out], out_ts[out], out_val[out], out_corr[out] = SPREAD, T, value, corr
            out += 1
        if r == len(ts):
            break
        code = leg[r]
        if code < 0:
            continue
        t = ts[r]
        ha, lag_a = _advance(a_ts, a_px, ha, na, t - w, lag_a)
        hb, lag_b = _advance(b_ts, b_px, hb, nb, t - w, lag_b)
        if code == 0:
            last_a = a_px[na]
            na += 1
        else:
            last_b = b_px[nb]
            nb += 1
        if lag_a != lag_a or lag_b != lag_b:
            continue
        # SpreadCore's pre-check: well inside the band nothing can change, no logs needed
        x = last_a / last_b * (lag_b / lag_a)
        if armed:
            if fire_lo < x < fire_hi:
                continue
        elif not rearm_lo < x < rearm_hi:
            continue
        d = np.log(last_a / lag_a) - np.log(last_b / lag_b)
        if armed:
            if abs(d) > thr:
                armed = False
                out_kind[out], out_ts[out], out_val[out], out_corr[out] = DIVERGENCE, t, d, np.nan
                out += 1
        elif abs(d) < rearm_at:
            armed = True
    f[0], f[1], f[2], f[3] = last_a, last_b, lag_a, lag_b
    f[4], f[5], f[6], f[7], f[8], f[9], f[10] = sa, sb, saa, sbb, sab, prev_a, prev_b
    i[0], i[1], i[2] = int(armed), ha, hb
    i[3], i[4], i[5], i[6], i[7] = valid, nza, nzb, int(have_prev), count
    for j in range(count):  # oldest first
        src = (head + j) % n
        ring[0, j], ring[1, j], ring[2, j] = ra_buf[src], rb_buf[src], ok_buf[src]
    return out, a_ts[:na], a_px[:na], b_ts[:nb], b_px[:nb]
