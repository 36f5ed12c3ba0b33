"""The BTC/ETH spread rule over a whole batch, compiled by numba (no fast-math).

The kernel repeats the per-event rule statement for statement, with IEEE double arithmetic
and the C library's log, so it reproduces it bit for bit; it lives in an importable module
so numba can cache the compiled code between runs. Its last parameters are SpreadState's
fields (strategies/btc_eth_spread.py), by name and in order, and it returns their new
values in the same order: ``spread.py`` maps them from the state by name.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .keycodes import pair_codes_kernel

DIVERGENCE, SPREAD = 0, 1


@njit(cache=True, inline="always")
def _advance(ts, px, head, end, cut, lag):  # pragma: no cover - compiled
    """One leg's trades at or before ``cut`` leave the window; the last to leave is the lag."""
    while head < end and ts[head] <= cut:
        lag = px[head]
        head += 1
    return head, lag


@njit(cache=True, nogil=True, error_model="numpy")
def spread_kernel(ts, price, key_offsets, key_data, key_start, want_offsets, want_data,
                  fire_t, fire_pos, w, thr, rearm_at, band, n,
                  out_kind, out_ts, out_val, out_corr,
                  a_ts, a_px, b_ts, b_px, last_a, last_b, lag_a, lag_b, armed, first,
                  has_prev, prev_a, prev_b, ra, rb, ok,
                  sa, sb, saa, sbb, sab, valid, nza, nzb):  # pragma: no cover - compiled
    """The per-event trade and grid steps over one batch, with the timer fires inside it.

    Rows are matched to legs a (code 0) and b (code 1) from the key column's buffers; each
    leg's trades are its window's (``a_ts``...) then this batch's. ``band`` is the core's
    fire_lo, fire_hi, rearm_lo, rearm_hi (the ratio pre-check), ``n`` the sample returns in
    a window. Writes the outputs to ``out_*`` and returns their number and the new state.
    """
    # the legs' trades: the window's, then the batch's (rows are only ever a or b: the
    # engine hands a strategy just the keys() it asked for)
    leg = pair_codes_kernel(key_offsets, key_data, key_start, len(ts), want_offsets, want_data)
    na, nb = len(a_ts), len(b_ts)
    in_a = 0
    for r in range(len(ts)):
        in_a += leg[r] == 0
    all_a_ts = np.empty(na + in_a, np.int64)
    all_a_px = np.empty(len(all_a_ts))
    all_b_ts = np.empty(nb + len(ts) - in_a, np.int64)
    all_b_px = np.empty(len(all_b_ts))
    all_a_ts[:na], all_a_px[:na], all_b_ts[:nb], all_b_px[:nb] = a_ts, a_px, b_ts, b_px
    ja, jb = na, nb
    for r in range(len(ts)):
        if leg[r] == 0:
            all_a_ts[ja], all_a_px[ja] = ts[r], price[r]
            ja += 1
        elif leg[r] == 1:
            all_b_ts[jb], all_b_px[jb] = ts[r], price[r]
            jb += 1
    # the sample window as ring buffers, oldest at ``head``
    count = len(ok)
    ra_buf, rb_buf, ok_buf = np.zeros(n), np.zeros(n), np.zeros(n, np.int64)
    ra_buf[:count], rb_buf[:count], ok_buf[:count] = ra, rb, ok
    head = 0
    ha, hb = 0, 0  # first trade of each leg still inside the window
    fire_lo, fire_hi, rearm_lo, rearm_hi = band[0], band[1], band[2], band[3]
    k = 0  # next fire
    out = 0
    nf = len(fire_t)
    for r in range(len(ts) + 1):
        while k < nf and fire_pos[k] == r:  # on_timer(T): advance, then sample
            T = fire_t[k]
            k += 1
            ha, lag_a = _advance(all_a_ts, all_a_px, ha, na, T - w, lag_a)
            hb, lag_b = _advance(all_b_ts, all_b_px, hb, nb, T - w, lag_b)
            if has_prev and prev_a == prev_a and prev_b == prev_b and last_a == last_a and last_b == last_b:
                r_a, r_b, r_ok = np.log(last_a / prev_a), np.log(last_b / prev_b), 1
            else:
                r_a, r_b, r_ok = 0.0, 0.0, 0
            if count == n:
                ra_o, rb_o, ok_o = ra_buf[head], rb_buf[head], ok_buf[head]
                slot = head
                head = (head + 1) % n
            else:
                ra_o, rb_o, ok_o = 0.0, 0.0, 0
                slot = (head + count) % n
                count += 1
            sa += r_a - ra_o
            sb += r_b - rb_o
            saa += r_a * r_a - ra_o * ra_o
            sbb += r_b * r_b - rb_o * rb_o
            sab += r_a * r_b - ra_o * rb_o
            valid += r_ok - ok_o
            nza += int(r_a != 0.0) - int(ra_o != 0.0)
            nzb += int(r_b != 0.0) - int(rb_o != 0.0)
            ra_buf[slot], rb_buf[slot], ok_buf[slot] = r_a, r_b, r_ok
            has_prev, prev_a, prev_b = True, last_a, last_b
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
        ha, lag_a = _advance(all_a_ts, all_a_px, ha, na, t - w, lag_a)
        hb, lag_b = _advance(all_b_ts, all_b_px, hb, nb, t - w, lag_b)
        if code == 0:
            last_a = all_a_px[na]
            na += 1
        else:
            last_b = all_b_px[nb]
            nb += 1
        if lag_a != lag_a or lag_b != lag_b:
            continue
        # the core's pre-check: well inside the band nothing can change, no logs needed
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
    ra_out, rb_out, ok_out = np.empty(count), np.empty(count), np.empty(count, np.int64)
    for j in range(count):  # oldest first
        src = (head + j) % n
        ra_out[j], rb_out[j], ok_out[j] = ra_buf[src], rb_buf[src], ok_buf[src]
    return out, (all_a_ts[ha:na], all_a_px[ha:na], all_b_ts[hb:nb], all_b_px[hb:nb],
                 last_a, last_b, lag_a, lag_b, armed, first, has_prev, prev_a, prev_b,
                 ra_out, rb_out, ok_out, sa, sb, saa, sbb, sab, valid, nza, nzb)
