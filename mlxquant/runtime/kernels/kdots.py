"""Block dot products of the 256-weight types (Q2_K..Q6_K, IQ4_XS, TQ1_0, TQ2_0) straight from
the codes: same contract and shape as :mod:`.dots` (``xs``: sums of ``x`` per 16 weights, used for
the K-quants' sub-block mins). Layouts: see :mod:`.layout`.

Per (sub-)block of 16 or 32 weights: one float32 sum of ``q·x`` over integer codes, then the
sub-block scale (and ``min·Σx``) applied once, as ggml's ``vec_dot_q*_K`` groups its work.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layout import KVALUES_IQ4NL, f16_at, q3_scale, scale_min_k4, trit

F32 = np.float32


@njit(inline="always")
def dot_q4_k(w, p, x, xo, xs, so, n16):
    d = f16_at(w, p)
    dmin = f16_at(w, p + 2)
    total = F32(0)
    for g in range(4):
        sc1, m1 = scale_min_k4(w, p + 4, 2 * g)
        sc2, m2 = scale_min_k4(w, p + 4, 2 * g + 1)
        q0 = p + 16 + 32 * g
        o = xo + 64 * g
        s1 = F32(0)
        s2 = F32(0)
        for l in range(32):
            q = np.int32(w[q0 + l])
            s1 += F32(q & 0xF) * x[o + l]
            s2 += F32(q >> 4) * x[o + 32 + l]
        k = so + 4 * g
        total += (d * F32(sc1)) * s1 - (dmin * F32(m1)) * (xs[k] + xs[k + 1])
        total += (d * F32(sc2)) * s2 - (dmin * F32(m2)) * (xs[k + 2] + xs[k + 3])
    return total


@njit(inline="always")
def dot_q5_k(w, p, x, xo, xs, so, n16):
    d = f16_at(w, p)
    dmin = f16_at(w, p + 2)
    total = F32(0)
    for g in range(4):
        sc1, m1 = scale_min_k4(w, p + 4, 2 * g)
        sc2, m2 = scale_min_k4(w, p + 4, 2 * g + 1)
        q0 = p + 48 + 32 * g
        o = xo + 64 * g
        s1 = F32(0)
        s2 = F32(0)
        for l in range(32):
            q = np.int32(w[q0 + l])
            h = np.int32(w[p + 16 + l]) >> (2 * g)
            s1 += F32((q & 0xF) | ((h & 1) << 4)) * x[o + l]
            s2 += F32((q >> 4) | ((h & 2) << 3)) * x[o + 32 + l]
        k = so + 4 * g
        total += (d * F32(sc1)) * s1 - (dmin * F32(m1)) * (xs[k] + xs[k + 1])
        total += (d * F32(sc2)) * s2 - (dmin * F32(m2)) * (xs[k + 2] + xs[k + 3])
    return total


@njit(inline="always")
def dot_q6_k(w, p, x, xo, xs, so, n16):
    total = F32(0)
    for n in range(2):
        ql = p + 64 * n
        qh = p + 128 + 32 * n
        sc = p + 192 + 8 * n
        o = xo + 128 * n
        for i in range(2):  # 16 weights of each of the 4 quarter-rows share a scale
            s1 = F32(0)
            s2 = F32(0)
            s3 = F32(0)
            s4 = F32(0)
            for l in range(16 * i, 16 * i + 16):
                h = np.int32(w[qh + l])
                a = np.int32(w[ql + l])
                b = np.int32(w[ql + 32 + l])
                s1 += F32(((a & 0xF) | ((h & 3) << 4)) - 32) * x[o + l]
                s2 += F32(((b & 0xF) | (((h >> 2) & 3) << 4)) - 32) * x[o + 32 + l]
                s3 += F32(((a >> 4) | (((h >> 4) & 3) << 4)) - 32) * x[o + 64 + l]
                s4 += F32(((b >> 4) | (((h >> 6) & 3) << 4)) - 32) * x[o + 96 + l]
            total += (F32(np.int8(w[sc + i])) * s1 + F32(np.int8(w[sc + i + 2])) * s2
                      + F32(np.int8(w[sc + i + 4])) * s3 + F32(np.int8(w[sc + i + 6])) * s4)
    return f16_at(w, p + 208) * total


@njit(inline="always")
def dot_q3_k(w, p, x, xo, xs, so, n16):
    total = F32(0)
    for n in range(2):
        q0 = p + 32 + 32 * n
        for j in range(4):
            m = 4 * n + j
            for half in range(2):
                s = F32(0)
                o = xo + 128 * n + 32 * j + 16 * half
                for l in range(n16):
                    q = (np.int32(w[q0 + 16 * half + l]) >> (2 * j)) & 3
                    hb = (np.int32(w[p + 16 * half + l]) >> m) & 1
                    s += F32(q - 4 + 4 * hb) * x[o + l]
                total += F32(q3_scale(w, p + 96, 8 * n + 2 * j + half)) * s
    return f16_at(w, p + 108) * total


@njit(inline="always")
def dot_q2_k(w, p, x, xo, xs, so, n16):
    d = f16_at(w, p + 80)
    dmin = f16_at(w, p + 82)
    total = F32(0)
    for n in range(2):
        q0 = p + 16 + 32 * n
        for j in range(4):
            for half in range(2):
                sc = np.int32(w[p + 8 * n + 2 * j + half])
                s = F32(0)
                o = xo + 128 * n + 32 * j + 16 * half
                for l in range(16):
                    s += F32((np.int32(w[q0 + 16 * half + l]) >> (2 * j)) & 3) * x[o + l]
                total += (d * F32(sc & 0xF)) * s - (dmin * F32(sc >> 4)) * xs[so + 8 * n + 2 * j + half]
    return total


@njit(inline="always")
def dot_iq4_xs(w, p, x, xo, xs, so, n16):
    d = f16_at(w, p)
    sh = np.int32(w[p + 2]) | (np.int32(w[p + 3]) << 8)
    total = F32(0)
    for ib in range(8):
        ls = ((np.int32(w[p + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
        q0 = p + 8 + 16 * ib
        o = xo + 32 * ib
        s = F32(0)
        for j in range(n16):
            q = w[q0 + j]
            s += KVALUES_IQ4NL[q & 15] * x[o + j] + KVALUES_IQ4NL[q >> 4] * x[o + 16 + j]
        total += F32(ls - 32) * s
    return d * total


@njit(inline="always")
def dot_tq2_0(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(2):
        for l in range(4):
            o = xo + 128 * j + 32 * l
            for m in range(2 * n16):
                s += F32(((np.int32(w[p + 32 * j + m]) >> (2 * l)) & 3) - 1) * x[o + m]
    return f16_at(w, p + 64) * s


@njit(inline="always")
def dot_tq1_0(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for n in range(5):
        for m in range(2 * n16):
            s += F32(trit(w[p + m], n)) * x[xo + 32 * n + m]
    for n in range(5):
        for m in range(n16):
            s += F32(trit(w[p + 32 + m], n)) * x[xo + 160 + 16 * n + m]
    for n in range(4):
        for j in range(4):
            s += F32(trit(w[p + 48 + j], n)) * x[xo + 240 + 4 * n + j]
    return f16_at(w, p + 52) * s
