"""Block dot products of the 256-weight types without a vector-IR row product (Q2_K, Q3_K,
TQ1_0, TQ2_0; Q4_K, Q5_K, Q6_K and IQ4_XS are in :mod:`.vdots`) straight from the codes: same contract and shape as :mod:`.dots` (``xs``: sums of ``x`` per 16 weights, used for
the K-quants' sub-block mins). Layouts: see :mod:`.layout`.

Per (sub-)block of 16 or 32 weights: one float32 sum of ``q·x`` over integer codes, then the
sub-block scale (and ``min·Σx``) applied once, as ggml's ``vec_dot_q*_K`` groups its work.

Shape of Q2_K and Q3_K (1.5-2.4x faster than one loop per sub-block, ``benchmarks/kernels.py``): one
loop over the block's bytes with every sub-block that reads those bytes in its body (8 float32
sums, so each vectorized loop runs 16 or 32 bytes at once and its loop and reduction overhead is
paid once per 128-256 weights), codes unpacked with the 32-bit integer ops of :mod:`.layout`
(Numba's 64-bit integers halve the lanes), constant code offsets moved out of the loop
(``Σ (q - 32)·x = Σ q·x - 32·Σx``), the scales (unpacked without branches) applied to the 8 sums
after the loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layout import and32, f16_at, or32, q3_scale, shl32, shr32, trit

F32 = np.float32


@njit(inline="always")
def dot_q3_k(w, p, x, xo, xs, so, n16):
    total = F32(0)
    for n in range(2):  # 128 weights: 2-bit field j of qs[32n + 16h + l] is weight 32j + 16h + l
        q0 = p + 32 + 32 * n
        m = 4 * n  # high bit of that weight: bit m + j of hmask[16h + l]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = F32(0)
        o = xo + 128 * n
        for l in range(n16):
            a = np.int32(w[q0 + l])
            b = np.int32(w[q0 + 16 + l])
            ha = shr32(np.int32(w[p + l]), m)
            hb = shr32(np.int32(w[p + 16 + l]), m)
            # code + 4 (0..7): (q | 4·hbit); Σ (code + 4 - 4)·x uses Σx below
            s0 += F32(or32(and32(a, 3), shl32(and32(ha, 1), 2))) * x[o + l]
            s1 += F32(or32(and32(b, 3), shl32(and32(hb, 1), 2))) * x[o + 16 + l]
            s2 += F32(or32(and32(shr32(a, 2), 3), shl32(and32(ha, 2), 1))) * x[o + 32 + l]
            s3 += F32(or32(and32(shr32(b, 2), 3), shl32(and32(hb, 2), 1))) * x[o + 48 + l]
            s4 += F32(or32(and32(shr32(a, 4), 3), and32(ha, 4))) * x[o + 64 + l]
            s5 += F32(or32(and32(shr32(b, 4), 3), and32(hb, 4))) * x[o + 80 + l]
            s6 += F32(or32(shr32(a, 6), shr32(and32(ha, 8), 1))) * x[o + 96 + l]
            s7 += F32(or32(shr32(b, 6), shr32(and32(hb, 8), 1))) * x[o + 112 + l]
        k = so + 8 * n
        c = p + 96
        i = 8 * n
        total += ((F32(q3_scale(w, c, i)) * (s0 - F32(4) * xs[k])
                   + F32(q3_scale(w, c, i + 1)) * (s1 - F32(4) * xs[k + 1]))
                  + (F32(q3_scale(w, c, i + 2)) * (s2 - F32(4) * xs[k + 2])
                     + F32(q3_scale(w, c, i + 3)) * (s3 - F32(4) * xs[k + 3]))
                  + (F32(q3_scale(w, c, i + 4)) * (s4 - F32(4) * xs[k + 4])
                     + F32(q3_scale(w, c, i + 5)) * (s5 - F32(4) * xs[k + 5]))
                  + (F32(q3_scale(w, c, i + 6)) * (s6 - F32(4) * xs[k + 6])
                     + F32(q3_scale(w, c, i + 7)) * (s7 - F32(4) * xs[k + 7])))
    return f16_at(w, p + 108) * total


@njit(inline="always")
def dot_q2_k(w, p, x, xo, xs, so, n16):
    pos = F32(0)
    neg = F32(0)
    for n in range(2):  # 128 weights: 2-bit field j of qs[32n + 16h + l] is weight 32j + 16h + l
        q0 = p + 16 + 32 * n
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = F32(0)
        o = xo + 128 * n
        for l in range(n16):
            a = np.int32(w[q0 + l])
            b = np.int32(w[q0 + 16 + l])
            s0 += F32(and32(a, 3)) * x[o + l]
            s1 += F32(and32(b, 3)) * x[o + 16 + l]
            s2 += F32(and32(shr32(a, 2), 3)) * x[o + 32 + l]
            s3 += F32(and32(shr32(b, 2), 3)) * x[o + 48 + l]
            s4 += F32(and32(shr32(a, 4), 3)) * x[o + 64 + l]
            s5 += F32(and32(shr32(b, 4), 3)) * x[o + 80 + l]
            s6 += F32(shr32(a, 6)) * x[o + 96 + l]
            s7 += F32(shr32(b, 6)) * x[o + 112 + l]
        c = p + 8 * n  # scales[8n + i]: low nibble scale, high nibble min of 16 weights
        k = so + 8 * n
        pos += ((F32(w[c] & 15) * s0 + F32(w[c + 1] & 15) * s1)
                + (F32(w[c + 2] & 15) * s2 + F32(w[c + 3] & 15) * s3)
                + (F32(w[c + 4] & 15) * s4 + F32(w[c + 5] & 15) * s5)
                + (F32(w[c + 6] & 15) * s6 + F32(w[c + 7] & 15) * s7))
        neg += ((F32(w[c] >> 4) * xs[k] + F32(w[c + 1] >> 4) * xs[k + 1])
                + (F32(w[c + 2] >> 4) * xs[k + 2] + F32(w[c + 3] >> 4) * xs[k + 3])
                + (F32(w[c + 4] >> 4) * xs[k + 4] + F32(w[c + 5] >> 4) * xs[k + 5])
                + (F32(w[c + 6] >> 4) * xs[k + 6] + F32(w[c + 7] >> 4) * xs[k + 7]))
    return f16_at(w, p + 80) * pos - f16_at(w, p + 82) * neg


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
