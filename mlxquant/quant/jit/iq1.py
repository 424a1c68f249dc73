"""Compiled 1-bit grid types: IQ1_S (imatrix required) and IQ1_M (256 weights per block).

The loops of ggml-quants.c (``quantize_row_iq1_s_impl``, ``quantize_row_iq1_m_impl``,
``iq1_find_best_neighbour2``, the ``qsort`` with ``iq1_sort_helper``; ``dequantize_row_iq1_s``
/ ``dequantize_row_iq1_m``); block layouts, the tie question and the exactness argument are in
:mod:`mlxquant.quant.numpy.iq1`, the grid and search state in :mod:`..grids_iq1` and
:mod:`..grids_iq2`.

The kernels are ggml's loops in the same float32 order. The sort is a stable insertion sort of
the sub-block's indices (32 or 16 of them): any stable sort gives the permutation glibc's merge
sort gives. The split search keeps C's running best (each candidate compared with the best so
far, a sequential dependence), but most candidates cannot beat it: each row of candidates (one
``i1``) is first tested against the row's starting best in a branch-free pass LLVM vectorizes,
and only a row with a winner is scanned candidate by candidate. That is exact: the best only
changes when a candidate beats it, so a row where none beats the starting best leaves it as is.
The search state (``kmap``, ``neighbours``) is passed as arguments rather than frozen into the
machine code. A kernel returns 0, or the code of what ggml cannot do (no neighbour at a finite
distance, where ggml reads past the block; a NaN scale, where it aborts); the codec raises a
QuantInputError for those.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..grids_iq1 import (
    GROUP_MAX_EPS_IQ1_M,
    GROUP_MAX_EPS_IQ1_S,
    IQ1_LEVELS,
    IQ1M_D_FUDGE,
    IQ1S_D_FUDGE,
    IQ1S_DELTA,
    IQ1S_GRID,
    X_PM,
)
from ..grids_iq2 import search_state
from .codec import JitCodec
from .grid_search import FLT_MAX, GridKernel, sigma2_of
from .numeric import F32, KERNEL, f16_at, fp16_to_fp32, fp32_to_fp16, get_u16, nearest_int, put_f16, put_u16

QK_K = 256
NO_NEIGHBOUR, NAN_SCALE = 1, 2
_WHY = {
    NO_NEIGHBOUR: "finds no grid neighbour at a finite distance and then reads past the block "
                  "(undefined result)",
    NAN_SCALE: "aborts here (a NaN sub-block scale, GGML_ASSERT(scale >= 0))",
}
NO_IMATRIX = "this type needs an importance matrix (imatrix); ggml aborts without one"

LEVELS = IQ1_LEVELS.copy()                         # (2048, 8) uint8
XV = X_PM.copy()                                   # (2, 3) float32: X_P, X_M
GRIDF = IQ1S_GRID.astype(np.float32)               # (2048, 8) -1/0/1 as float32
DELTA = IQ1S_DELTA


@njit(inline="always")
def best_neighbour(kmap, nbrs, u, xb, weight, o, scale, s, L):
    """iq1_find_best_neighbour2 for the group at ``xb[o:o+8]`` with value set ``XV[s]``; writes
    its levels into ``L[o:o+8]``. Returns the grid index, or -1 (no candidate below FLT_MAX)."""
    start = -np.int64(kmap[u]) - 1
    best_d2 = FLT_MAX
    gi = -1
    for j in range(1, np.int64(nbrs[start]) + 1):
        c = np.int64(nbrs[start + j])
        d2 = F32(0)
        for i in range(8):
            diff = scale * XV[s, LEVELS[c, i]] - xb[o + i]
            d2 += weight[o + i] * diff * diff
        if d2 < best_d2:
            best_d2 = d2
            gi = c
    if gi >= 0:
        for i in range(8):
            L[o + i] = LEVELS[gi, i]
    return gi


@njit(inline="always")
def place(kmap, nbrs, xb, weight, n, scale, sel, L, index):
    """Grid indices of the n/8 groups of levels ``L`` (value set ``XV[sel[k]]`` per group; an
    off-grid group takes its best neighbour), then the scale refitted on the grid points if a
    group moved (kept unless both sums are positive). Returns (scale, status)."""
    on_grid = True
    for k in range(n // 8):
        u = 0
        for j in range(8):
            u |= np.int64(L[8 * k + j]) << (2 * j)
        gi = np.int64(kmap[u])
        if gi < 0:
            on_grid = False
            gi = best_neighbour(kmap, nbrs, u, xb, weight, 8 * k, scale, sel[k], L)
            if gi < 0:
                return scale, NO_NEIGHBOUR
        index[k] = gi
    if on_grid:
        return scale, 0
    sumqx = F32(0)
    sumq2 = F32(0)
    for k in range(n // 8):
        for j in range(8):
            w = weight[8 * k + j]
            q = XV[sel[k], LEVELS[index[k], j]]
            sumqx += w * q * xb[8 * k + j]
            sumq2 += w * q * q
    if sumqx > 0 and sumq2 > 0:
        return sumqx / sumq2, 0
    return scale, 0


@njit(inline="always")
def prepare(xs, ws, has_w, sigma2, o, n, weight, idx):
    """Weights of the sub-block ``xs[o:o+n]`` (``qw*sqrt(sigma2 + x*x)``, or ``x*x``), its max
    |x| (returned) and its sorted order into ``idx`` (ggml sorts only when the max reaches its
    threshold; the order of a skipped sub-block is never used)."""
    m = F32(0)
    for i in range(n):
        v = xs[o + i]
        weight[i] = ws[o + i] * np.sqrt(sigma2 + v * v) if has_w else v * v
        a = abs(v)
        m = a if i == 0 or a > m else m
    for j in range(n):
        idx[j] = j
    for j in range(1, n):                  # stable insertion sort: glibc's qsort order
        t = idx[j]
        k = j - 1
        while k >= 0 and xs[o + idx[k]] > xs[o + t]:
            idx[k + 1] = idx[k]
            k -= 1
        idx[k + 1] = t
    return m


@njit(inline="always")
def reweigh(xs, ws, has_w, sigma2, o, n, weight):
    for i in range(n):
        v = xs[o + i]
        weight[i] = ws[o + i] * np.sqrt(sigma2 + v * v) if has_w else v * v


@njit(inline="always")
def sums_s(sumx, sumw, n, i1, i2, v):
    """sumqx, sumq2 of the split (i1, i2) with the values ``XV[v]``, as C computes them."""
    a = sumx[i1] - sumx[0]
    b = sumx[i2] - sumx[i1]
    c = sumx[n] - sumx[i2]
    wa = sumw[i1] - sumw[0]
    wb = sumw[i2] - sumw[i1]
    wc = sumw[n] - sumw[i2]
    v0, v1, v2 = XV[v, 0], XV[v, 1], XV[v, 2]
    return (a * v0 + b * v1) + c * v2, (wa * v0 * v0 + wb * v1 * v1) + wc * v2 * v2


@njit(inline="always")
def search_s(sumx, sumw, n, scale0):
    """IQ1_S's split search: (scale, i1, i2, s) with s 0 for X_P, 1 for X_M; i1 = -1 when no
    candidate has ``sumq2 > 0``. Rows of candidates are pre-tested (module docstring)."""
    best = -FLT_MAX
    scale = scale0
    b1 = -1
    b2 = -1
    bs = -1
    for i1 in range(n + 1):
        hit = False
        for i2 in range(i1, n + 1):
            qx, q2 = sums_s(sumx, sumw, n, i1, i2, 0)
            hp = (q2 > 0) & (qx * qx > best * q2)
            qx, q2 = sums_s(sumx, sumw, n, i1, i2, 1)
            hm = (q2 > 0) & (qx * qx > best * q2)
            hit |= hp | hm
        if not hit:
            continue
        for i2 in range(i1, n + 1):
            for v in range(2):
                qx, q2 = sums_s(sumx, sumw, n, i1, i2, v)
                if q2 > 0 and qx * qx > best * q2:
                    scale = qx / q2
                    best = scale * qx
                    b1, b2, bs = i1, i2, v
    return scale, b1, b2, bs


@njit(inline="always")
def sums_m(px, pw, n, i1, i2):
    """The four (sumqx, sumq2) of the split (i1, i2), k = 0: (+,+), 1: (+,-), 2: (-,+), 3: (-,-),
    from the per-half prefix sums as C computes them."""
    p2, m2 = XV[0, 2], XV[1, 2]
    cp1 = XV[0, 0] * XV[0, 0] - XV[0, 1] * XV[0, 1]
    cp2 = XV[0, 1] * XV[0, 1] - XV[0, 2] * XV[0, 2]
    cm1 = XV[1, 0] * XV[1, 0] - XV[1, 1] * XV[1, 1]
    cm2 = XV[1, 1] * XV[1, 1] - XV[1, 2] * XV[1, 2]
    s0 = px[0, i1] + px[0, i2]
    s1 = px[1, i1] + px[1, i2]
    xp0 = px[0, n] * p2 - s0
    xm0 = px[0, n] * m2 - s0
    xp1 = px[1, n] * p2 - s1
    xm1 = px[1, n] * m2 - s1
    qp0 = (pw[0, n] * p2 * p2 + pw[0, i1] * cp1) + pw[0, i2] * cp2
    qm0 = (pw[0, n] * m2 * m2 + pw[0, i1] * cm1) + pw[0, i2] * cm2
    qp1 = (pw[1, n] * p2 * p2 + pw[1, i1] * cp1) + pw[1, i2] * cp2
    qm1 = (pw[1, n] * m2 * m2 + pw[1, i1] * cm1) + pw[1, i2] * cm2
    return (xp0 + xp1, qp0 + qp1, xp0 + xm1, qp0 + qm1,
            xm0 + xp1, qm0 + qp1, xm0 + xm1, qm0 + qm1)


@njit(inline="always")
def beats(qx, q2, best):
    return (q2 > 0) & (qx * qx > best * q2)


@njit(inline="always")
def search_m(px, pw, n, scale0):
    """IQ1_M's split search on per-half prefix sums ``px``/``pw`` (2, n+1): (scale, i1, i2, k),
    i1 = -1 when nothing qualifies; rows of candidates pre-tested as in :func:`search_s`."""
    best = -FLT_MAX
    scale = scale0
    b1 = -1
    b2 = -1
    bk = -1
    for i1 in range(n + 1):
        hit = False
        for i2 in range(i1, n + 1):
            x0, q0, x1, q1, x2, q2, x3, q3 = sums_m(px, pw, n, i1, i2)
            hit |= beats(x0, q0, best) | beats(x1, q1, best) | beats(x2, q2, best) | beats(x3, q3, best)
        if not hit:
            continue
        for i2 in range(i1, n + 1):
            sums = sums_m(px, pw, n, i1, i2)
            for k in range(4):
                qx = sums[2 * k]
                q2 = sums[2 * k + 1]
                if q2 > 0 and qx * qx > best * q2:
                    scale = qx / q2
                    best = scale * qx
                    b1, b2, bk = i1, i2, k
    return scale, b1, b2, bk


@njit(inline="always")
def split_levels(idx, n, i1, i2, scale, L):
    """Levels of the split (0 below i1, 1 below i2, else 2 in sorted order), mirrored when the
    scale is negative; returns (|scale|, mirrored)."""
    for j in range(n):
        L[idx[j]] = 0 if j < i1 else (1 if j < i2 else 2)
    if scale < 0:
        for j in range(n):
            L[j] = 2 - L[j]
        return -scale, True
    return scale, False



@njit(**KERNEL)
def quantize_iq1_s(x, w, out, kmap, nbrs):
    rows, cols = x.shape
    has_w = w.size > 0
    weight = np.empty(32, np.float32)
    sumx = np.empty(33, np.float32)
    sumw = np.empty(33, np.float32)
    idx = np.empty(32, np.int64)
    L = np.empty(32, np.uint8)
    index = np.empty(4, np.int64)
    sel = np.empty(4, np.int64)
    scales = np.empty(8, np.float32)
    shifts = np.empty(8, np.int64)
    for r in range(rows):
        for b in range(cols // QK_K):
            xs = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * 50 : (b + 1) * 50]
            o[:] = 0
            sigma2 = sigma2_of(xs, has_w)
            max_scale = F32(0)
            for ib in range(8):
                xb = xs[32 * ib : 32 * ib + 32]
                mx = prepare(xs, w[b * QK_K :], has_w, sigma2, 32 * ib, 32, weight, idx)
                scales[ib] = 0
                shifts[ib] = 0
                if mx < GROUP_MAX_EPS_IQ1_S:
                    continue
                sumx[0] = 0
                sumw[0] = 0
                for j in range(32):
                    i = idx[j]
                    sumx[j + 1] = sumx[j] + weight[i] * xb[i]
                    sumw[j + 1] = sumw[j] + weight[i]
                scale, i1, i2, s = search_s(sumx, sumw, 32, mx)
                if i1 < 0:
                    continue
                scale, mirrored = split_levels(idx, 32, i1, i2, scale, L)
                s = 1 - s if mirrored else s
                sel[:] = s
                scale, status = place(kmap, nbrs, xb, weight, 32, scale, sel, L, index)
                if status:
                    return status
                h = 0
                for k in range(4):
                    o[2 + 4 * ib + k] = index[k] & 255
                    h |= (index[k] >> 8) << (3 * k)
                put_u16(o, 34 + 2 * ib, h)
                if not scale >= 0:
                    return NAN_SCALE
                scales[ib] = scale
                shifts[ib] = s
                max_scale = max_scale if max_scale > scale else scale
            if not max_scale:
                continue
            d = max_scale / F32(15)
            put_f16(o, 0, d * IQ1S_D_FUDGE)
            inv = F32(1) / d
            for ib in range(8):
                l = nearest_int(F32(0.5) * (inv * scales[ib] - F32(1)))
                l = max(0, min(7, l))
                l |= shifts[ib] << 3
                o[35 + 2 * ib] |= l << 4
    return 0


@njit(**KERNEL)
def quantize_iq1_m(x, w, out, kmap, nbrs):
    rows, cols = x.shape
    has_w = w.size > 0
    weight = np.empty(16, np.float32)
    px = np.empty((2, 17), np.float32)
    pw = np.empty((2, 17), np.float32)
    idx = np.empty(16, np.int64)
    L = np.empty(16, np.uint8)
    index = np.empty(2, np.int64)
    sel = np.empty(2, np.int64)
    scales = np.empty(16, np.float32)
    shifts = np.empty(16, np.int64)
    sc = np.empty(4, np.int64)
    for r in range(rows):
        for b in range(cols // QK_K):
            xs = x[r, b * QK_K : (b + 1) * QK_K]
            wb = w[b * QK_K :]
            o = out[r, b * 56 : (b + 1) * 56]
            o[:] = 0
            sigma2 = sigma2_of(xs, has_w)
            max_scale = F32(0)
            for ib in range(16):
                xb = xs[16 * ib : 16 * ib + 16]
                mx = prepare(xs, wb, has_w, sigma2, 16 * ib, 16, weight, idx)
                scales[ib] = 0
                shifts[ib] = 0
                if mx < GROUP_MAX_EPS_IQ1_M:
                    continue
                for h in range(2):
                    px[h, 0] = 0
                    pw[h, 0] = 0
                for j in range(16):
                    i = idx[j]
                    h = 0 if i < 8 else 1
                    px[h, j + 1] = px[h, j] + weight[i] * xb[i]
                    px[1 - h, j + 1] = px[1 - h, j]
                    pw[h, j + 1] = pw[h, j] + weight[i]
                    pw[1 - h, j + 1] = pw[1 - h, j]
                scale, i1, i2, k = search_m(px, pw, 16, mx)
                if i1 < 0:
                    continue
                scale, mirrored = split_levels(idx, 16, i1, i2, scale, L)
                k = 3 - k if mirrored else k                # (+,+) <-> (-,-), (+,-) <-> (-,+)
                sel[0] = k >> 1
                sel[1] = k & 1
                scale, status = place(kmap, nbrs, xb, weight, 16, scale, sel, L, index)
                if status:
                    return status
                o[2 * ib] = index[0] & 255
                o[2 * ib + 1] = index[1] & 255
                o[32 + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4)
                if not scale >= 0:
                    return NAN_SCALE
                scales[ib] = scale
                shifts[ib] = k
                max_scale = max_scale if max_scale > scale else scale
            if not max_scale:
                continue
            d = max_scale / F32(15)
            inv = F32(1) / d
            sumqx = F32(0)
            sumq2 = F32(0)
            sc[:] = 0
            for ib in range(16):
                l = nearest_int(F32(0.5) * (inv * scales[ib] - F32(1)))
                l = max(0, min(7, l))
                sc[ib // 4] |= l << (3 * (ib % 4))
                k = shifts[ib]
                o[32 + ib] |= (0x08 if k >= 2 else 0) | (0x80 if k % 2 == 1 else 0)
                reweigh(xs, wb, has_w, sigma2, 16 * ib, 16, weight)
                f = F32(2 * l + 1)
                for g in range(2):
                    s = (k >> 1) if g == 0 else (k & 1)
                    gi = np.int64(o[2 * ib + g]) | ((np.int64(o[32 + ib]) << (8 - 4 * g)) & 0x700)
                    for j in range(8):
                        wj = weight[8 * g + j]
                        q = XV[s, LEVELS[gi, j]] * f
                        sumqx += wj * q * xs[16 * ib + 8 * g + j]
                        sumq2 += wj * q * q
            if sumq2 > 0:
                d = sumqx / sumq2
            hb = fp32_to_fp16(d * IQ1M_D_FUDGE)  # d's float16 bits, a nibble per scale word
            for j in range(4):
                put_u16(o, 48 + 2 * j, sc[j] | (((hb >> (4 * j)) & 0xF) << 12))
    return 0


@njit(**KERNEL)
def dequantize_iq1_s(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 50 : (b + 1) * 50]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 0)
            for ib in range(8):
                qh = get_u16(blk, 34 + 2 * ib)
                dl = d * F32(2 * ((qh >> 12) & 7) + 1)
                delta = -DELTA if qh & 0x8000 else DELTA
                for k in range(4):
                    gi = np.int64(blk[2 + 4 * ib + k]) | (((qh >> (3 * k)) & 7) << 8)
                    for j in range(8):
                        y[32 * ib + 8 * k + j] = dl * (GRIDF[gi, j] + delta)


@njit(**KERNEL)
def dequantize_iq1_m(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 56 : (b + 1) * 56]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            h = 0
            for j in range(4):                      # d's float16 bits: a nibble atop each scale word
                h |= (get_u16(blk, 48 + 2 * j) >> 12) << (4 * j)
            d = fp16_to_fp32(h)
            for ib in range(16):
                scw = get_u16(blk, 48 + 2 * (ib // 4))
                dl = d * F32(2 * ((scw >> (3 * (ib % 4))) & 7) + 1)
                qh = np.int64(blk[32 + ib])
                for g in range(2):
                    gi = np.int64(blk[2 * ib + g]) | (((qh >> (4 * g)) & 7) << 8)
                    delta = -DELTA if (qh >> (3 + 4 * g)) & 1 else DELTA
                    for j in range(8):
                        y[16 * ib + 8 * g + j] = dl * (GRIDF[gi, j] + delta)


def _tables() -> tuple[np.ndarray, np.ndarray]:
    st = search_state("IQ1_S")  # shared by IQ1_M; built once, thread-safe
    return st.kmap, st.neighbours


class IQ1_S(JitCodec, qtype="IQ1_S", backend="numba"):
    quantize_kernel = GridKernel(quantize_iq1_s, "IQ1_S", _tables, NO_IMATRIX, _WHY)
    dequantize_kernel = staticmethod(dequantize_iq1_s)


class IQ1_M(JitCodec, qtype="IQ1_M", backend="numba"):
    quantize_kernel = GridKernel(quantize_iq1_m, "IQ1_M", _tables, None, _WHY)
    dequantize_kernel = staticmethod(dequantize_iq1_m)
