"""Compiled (numba) passes over blocks of a float32 GEMM: the kNN density's k smallest distances per row
(:func:`sum_rows`) and K-means' nearest centroid (:func:`nearest_rows`, :func:`member_sums`, :func:`dissim_rows`).

Every function works on one row at a time and writes only that row's outputs, in a fixed order of additions, so
a result does not depend on how rows are split among threads; the callers make the GEMM bits themselves
independent of the thread count (single-threaded BLAS blocks of fixed shapes) or recompute near-ties in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_F32_INF = np.float32(np.inf)
_TWO = np.float32(2.0)
_MAX_CHUNK = 64  # columns per class whose minimum the first pass keeps


@njit(cache=True)
def n_chunks(n, k):
    """Column classes of the first pass: at least ``k`` (the k smallest class minima are k distinct points),
    about ``n / 64``."""
    return max(k, n // _MAX_CHUNK)


@njit(nogil=True, cache=True)
def _sq_dist64(a, b):
    """``|a - b|^2`` in float64 from float32 rows, four partial sums combined in a fixed order."""
    d = a.size
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    f = 0
    while f + 4 <= d:
        u0 = np.float64(a[f]) - np.float64(b[f])
        u1 = np.float64(a[f + 1]) - np.float64(b[f + 1])
        u2 = np.float64(a[f + 2]) - np.float64(b[f + 2])
        u3 = np.float64(a[f + 3]) - np.float64(b[f + 3])
        s0 += u0 * u0
        s1 += u1 * u1
        s2 += u2 * u2
        s3 += u3 * u3
        f += 4
    while f < d:
        u0 = np.float64(a[f]) - np.float64(b[f])
        s0 += u0 * u0
        f += 1
    return (s0 + s1) + (s2 + s3)


@njit(nogil=True, cache=True)
def _select(v, ids, c, k):
    """Rearrange ``v[:c]`` (and ``ids[:c]`` alongside) in place so that ``v[k - 1]`` is its k-th smallest value,
    the smaller ones before it and the larger after (Hoare's quickselect, median-of-three pivots;
    deterministic). ``ids`` may be empty (then only ``v`` moves)."""
    lo = 0
    hi = c - 1
    t = k - 1
    while hi > lo:
        mid = (lo + hi) // 2
        a = v[lo]
        b = v[mid]
        e = v[hi]
        pivot = max(min(a, b), min(max(a, b), e))
        i = lo
        j = hi
        while i <= j:
            while v[i] < pivot:
                i += 1
            while v[j] > pivot:
                j -= 1
            if i <= j:
                tmp = v[i]
                v[i] = v[j]
                v[j] = tmp
                if ids.size:
                    tid = ids[i]
                    ids[i] = ids[j]
                    ids[j] = tid
                i += 1
                j -= 1
        if t <= j:
            hi = j
        elif t >= i:
            lo = i
        else:
            break
    return v[t]


@njit(nogil=True, cache=True, fastmath={"nnan", "nsz", "contract"})
def _vertical_pass(g, sqn, self_j, minima):
    """``g[j] = sqn[j] - 2 g[j]`` in place (``+inf`` at ``self_j``); ``minima[b]`` = least value over the columns
    ``b, b + nb, ...`` (``nb = minima.size``: an elementwise minimum over consecutive blocks, which vectorises).
    Fast-math flags: no NaN (the inputs are finite), signed zeros and fused multiply-add; infinities stay exact."""
    n = g.size
    nb = minima.size
    minima[:] = _F32_INF
    full = n - n % nb
    for s in range(0, full, nb):
        blk = g[s:s + nb]
        sq = sqn[s:s + nb]
        for b in range(nb):
            v = sq[b] - _TWO * blk[b]
            blk[b] = v
            minima[b] = v if v < minima[b] else minima[b]
    for j in range(full, n):
        v = sqn[j] - _TWO * g[j]
        g[j] = v
        b = j - full
        minima[b] = v if v < minima[b] else minima[b]
    if self_j >= 0:
        g[self_j] = _F32_INF
        b = self_j % nb
        m = _F32_INF
        for j in range(b, n, nb):
            m = g[j] if g[j] < m else m
        minima[b] = m


@njit(nogil=True, cache=True)
def sum_rows(g, sqn, qn2, slack, inv_scale2, xq, xc, self_cols, k, squared, out, out_ids):
    """Sum, for every row ``r`` of the block, of its ``k`` smallest squared distances (``squared``) or distances to
    the columns, read off the GEMM: ``d^2_j = max(0, qn2[r] + sqn[j] - 2 g[r, j]) * inv_scale2``.

    ``g`` (b, c) float32 ``q'_r . x'_j`` of centred points scaled by ``1 / sqrt(inv_scale2)`` (overwritten); ``sqn``
    (c,) float32 ``|x'_j|^2``; ``qn2`` (b,) float64 ``|q'_r|^2``; ``slack`` (b,) float64: a bound on the error of
    each GEMM value (same units); ``xq`` (b, d), ``xc`` (c, d): the float32 originals; ``self_cols`` (b,): the
    column left out of row r's neighbours (-1: none). A value within ``64 slack`` of zero (where the GEMM's
    cancellation makes it meaningless) is recomputed in float64 from the coordinates. The k smallest values are
    found from the minima of ``nb >= k`` column classes (the k-th smallest class minimum bounds the k-th smallest
    value), so only the classes under that bound are read again. Float64 sums in a fixed order. ``out_ids``
    (b, k) or (0, k): the columns of the k nearest (in no particular order), when it has rows.
    """
    n = g.shape[1]
    nb = n_chunks(n, k)
    minima = np.empty(nb, dtype=np.float32)
    scratch = np.empty(nb, dtype=np.float32)
    vals = np.empty(n, dtype=np.float32)
    ids = np.empty(n, dtype=np.int64)
    none = np.empty(0, dtype=np.int64)
    for r in range(g.shape[0]):
        row = g[r]
        _vertical_pass(row, sqn, self_cols[r], minima)
        scratch[:] = minima
        upper = _select(scratch, none, nb, k)
        c = 0
        for b in range(nb):
            if minima[b] <= upper:
                for j in range(b, n, nb):
                    if row[j] <= upper:
                        vals[c] = row[j]
                        ids[c] = j
                        c += 1
        _select(vals, ids, c, k)
        s = 0.0
        for t in range(k):
            d2 = qn2[r] + np.float64(vals[t])
            if d2 < 64.0 * slack[r]:
                d2 = _sq_dist64(xq[r], xc[ids[t]])
            else:
                d2 *= inv_scale2
            s += d2 if squared else np.sqrt(d2)
        out[r] = s
        if out_ids.shape[0]:
            for t in range(k):
                out_ids[r, t] = ids[t]


# ------------------------------------------------------------------------------------------------------------
# K-means (uslkit.cluster)
# ------------------------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def nearest_rows(g, cn, xn, cmax, slack2, x, c64, lab):
    """Nearest centroid of each row of a block: ``lab[r]`` = argmin_j float64 ``|x_r - c_j|^2`` (ties: lower j).

    ``g`` (b, K) float32 ``x'_r . c'_j`` of the centred, scaled data (any BLAS); ``cn`` (K,) float32 ``|c'_j|^2``;
    ``xn`` (b,) float64 ``|x'_r|``; ``cmax`` = max ``|c'_j|``; ``slack2``: the rounding factor (see
    ``uslkit.cluster._Nearest``). A row whose runner-up is within ``slack2 (|x'_r| + cmax)^2`` of its best GEMM
    value is decided by float64 distances from ``x`` (b, d) float32 and ``c64`` (K, d) float64.
    """
    kk = g.shape[1]
    for r in range(g.shape[0]):
        best = np.inf
        second = np.inf
        w = 0
        for j in range(kk):
            v = np.float64(cn[j] - _TWO * g[r, j])
            if v < best:
                second = best
                best = v
                w = j
            elif v < second:
                second = v
        if not (second - best > slack2 * (xn[r] + cmax) ** 2):
            xr = x[r]
            bd = np.inf
            for j in range(kk):
                dd = _sq_dist64(xr, c64[j])
                if dd < bd:
                    bd = dd
                    w = j
        lab[r] = w


@njit(nogil=True, cache=True)
def member_sums(x, labels, k):
    """float64 ``(k, d)`` sums of each cluster's rows, added in row order, and int64 ``(k,)`` counts."""
    d = x.shape[1]
    sums = np.zeros((k, d), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    for i in range(x.shape[0]):
        c = labels[i]
        counts[c] += 1
        for f in range(d):
            sums[c, f] += x[i, f]
    return sums, counts


@njit(nogil=True, cache=True)
def dissim_rows(x, c, lab, spherical, out):
    """``out[i]`` = float64 ``|x_i - c_lab_i|^2`` (``spherical``: ``-x_i . c_lab_i``), fixed order of additions."""
    d = x.shape[1]
    for i in range(x.shape[0]):
        ci = c[lab[i]]
        if spherical:
            s = 0.0
            for f in range(d):
                s += np.float64(x[i, f]) * np.float64(ci[f])
            out[i] = -s
        else:
            out[i] = _sq_dist64(x[i], ci)


@njit(nogil=True, cache=True)
def centre_rows(x, mu, xc, norms):
    """``xc[i] = x[i] - mu`` (float32, one rounding per entry) and ``norms[i]`` = float64 ``|xc[i]|``."""
    d = x.shape[1]
    for i in range(x.shape[0]):
        s = 0.0
        for f in range(d):
            v = x[i, f] - mu[f]
            xc[i, f] = v
            s += np.float64(v) * np.float64(v)
        norms[i] = np.sqrt(s)


# ------------------------------------------------------------------------------------------------------------
# USL's regulariser (uslkit.select.usl)
# ------------------------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def inverse_power_sums(d2, skip, floor, expo, cap, out):
    """``out[r] = sum_{j != skip[r]} min(cap, max(d2[r, j], floor) ** -expo)``, ``j`` in order (float64); exponents
    0.25, 0.5 and 1 by square roots and a division, as :func:`uslkit.select.usl._inverse_power`."""
    for r in range(d2.shape[0]):
        s = 0.0
        for j in range(d2.shape[1]):
            if j == skip[r]:
                continue
            v = max(d2[r, j], floor)
            if expo == 0.5:
                t = 1.0 / np.sqrt(v)
            elif expo == 1.0:
                t = 1.0 / v
            elif expo == 0.25:
                t = 1.0 / np.sqrt(np.sqrt(v))
            else:
                t = v ** -expo
            s += min(t, cap)
        out[r] = s


# ------------------------------------------------------------------------------------------------------------
# Sinkhorn-Knopp on a dense plan (uslkit.cluster, SeLa)
# ------------------------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def exp_shift_rows(s, beta, floor, out):
    """``out[i, j] = max(floor, exp(beta * (s[i, j] - max_j s[i, j])))`` (computed in float64, stored in ``out``'s
    dtype): a row of ``P^lambda`` up to the row factor Sinkhorn's sample scaling absorbs."""
    k = s.shape[1]
    for i in range(s.shape[0]):
        m = np.float64(s[i, 0])
        for j in range(1, k):
            if s[i, j] > m:
                m = np.float64(s[i, j])
        for j in range(k):
            out[i, j] = max(floor, np.exp(beta * (np.float64(s[i, j]) - m)))


@njit(nogil=True, cache=True)
def _row_dot(p, i, r):
    """float64 ``sum_j p[i, j] r[j]``: four partial sums over ``j mod 4``, combined in a fixed order."""
    k = p.shape[1]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    j = 0
    while j + 4 <= k:
        s0 += np.float64(p[i, j]) * r[j]
        s1 += np.float64(p[i, j + 1]) * r[j + 1]
        s2 += np.float64(p[i, j + 2]) * r[j + 2]
        s3 += np.float64(p[i, j + 3]) * r[j + 3]
        j += 4
    while j < k:
        s0 += np.float64(p[i, j]) * r[j]
        j += 1
    return (s0 + s1) + (s2 + s3)


@njit(nogil=True, cache=True)
def plan_col_dots(p, c, out):
    """``out[j] = sum_i p[i, j] c[i]`` in float64, ``i`` in order (the block's share of ``P^T c``)."""
    k = p.shape[1]
    for j in range(k):
        out[j] = 0.0
    for i in range(p.shape[0]):
        ci = c[i]
        for j in range(k):
            out[j] += np.float64(p[i, j]) * ci


@njit(nogil=True, cache=True, error_model="numpy")  # a diverging step gives inf/nan, caught by the caller
def plan_scale_rows(p, r, n_total, omega, c_old, c_out, col_out):
    """One Sinkhorn half-step and the next one's products in a single pass over the block's rows:
    ``c_out[i] = (1 / n_total) / sum_j p[i, j] r[j]``, over-relaxed as ``c_old[i]^(1 - omega) c_out[i]^omega``
    when ``omega != 1``, and ``col_out[j] = sum_i p[i, j] c_out[i]`` (``i`` in order; what :func:`plan_col_dots`
    gives for ``c_out``)."""
    k = p.shape[1]
    for j in range(k):
        col_out[j] = 0.0
    inv_n = 1.0 / n_total
    for i in range(p.shape[0]):
        ci = inv_n / _row_dot(p, i, r)
        if omega != 1.0:
            ci = c_old[i] ** (1.0 - omega) * ci**omega
        c_out[i] = ci
        for j in range(k):
            col_out[j] += np.float64(p[i, j]) * ci


@njit(nogil=True, cache=True)
def plan_argmax_rows(p, r, lab):
    """``lab[i] = argmax_j p[i, j] r[j]`` (float64 products; ties: lowest ``j``)."""
    for i in range(p.shape[0]):
        best = -1.0
        w = 0
        for j in range(p.shape[1]):
            v = np.float64(p[i, j]) * r[j]
            if v > best:
                best = v
                w = j
        lab[i] = w


@njit(nogil=True, cache=True)
def pair_sq_dists(x, rows, cols, out):
    """``out[t] = |x[rows[t]] - x[cols[t]]|^2`` in float64 (:func:`_sq_dist64`): the same bits for a pair wherever it
    is computed, and for ``(a, b)`` as for ``(b, a)``."""
    for t in range(rows.size):
        out[t] = _sq_dist64(x[rows[t]], x[cols[t]])


@njit(nogil=True, cache=True)
def other_cluster_candidates(d2, row_cl, col_cl, slack2, low, out_r, out_c):
    """One tile of ProbCover's purity radius: for each row ``i`` of the float32 distances ``d2`` lower ``low[i]`` to
    the least entry whose column is in another cluster (``col_cl[j] != row_cl[i]``), then list the columns of
    other clusters within ``low[i] + slack2[i]`` into ``out_r``/``out_c`` (row, column). Returns how many there are;
    when that exceeds ``out_r.size`` only the first ones are written and the caller calls again with room (``low``
    is already final for the tile then, so the second call lists the same pairs)."""
    m = 0
    cap = out_r.size
    for i in range(d2.shape[0]):
        ci = row_cl[i]
        best = low[i]
        for j in range(d2.shape[1]):
            if col_cl[j] != ci and d2[i, j] < best:
                best = d2[i, j]
        low[i] = best
        bound = np.float64(best) + slack2[i]
        for j in range(d2.shape[1]):
            if col_cl[j] != ci and d2[i, j] <= bound:
                if m < cap:
                    out_r[m] = i
                    out_c[m] = j
                m += 1
    return m
