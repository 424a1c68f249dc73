"""Block dot products of the 32-weight types and the float rows: ``Σ w·x`` over one block,
straight from the codes (the fused decode kernels' inner step).

``dot_<type>(w, p, x, xo, xs, so, n16)``: the block at byte ``p`` of the uint8 row ``w`` against
``x[xo:xo + block]``; ``xs[so + i]`` is the precomputed sum of ``x`` over the block's ``i``-th
16 weights (types with an additive min use it: ``Σ (q·d + m)·x = d·Σ q·x + m·Σ x``); ``n16`` is
16, given at run time where that vectorized better (see :mod:`.fused`). Each returns a float32.

Shape: the codes are unpacked with integer ops in loops of 16 or 32 over contiguous bytes and
multiplied into one float32 sum per (sub-)block, the scale applied once to that sum (ggml's
``vec_dot_*`` order of work; the activations stay float32). Written so LLVM vectorizes the loops
(AVX2 here: a decode-into-a-buffer form stayed scalar and ran 3.4x slower on Q4_0); halves are
converted by F16C (:func:`.layout.f16_at`). Q5_0/Q5_1 unpack their 5th bits with the 32-bit ops of
:mod:`.layout` (``shr32`` by the lane's index: ``vpsrlvd``), which ran them 2x faster than
Numba's 64-bit integers, and take Q5_0's offset out of the loop (``Σ (q - 16)·x = Σ q·x - 16·Σx``,
``Σx`` from ``xs``). Q4_0/Q4_1 kept their first form: the same changes made them slower.
Block layouts: see :mod:`.layout`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ...quant.jit.numeric import bits_f32
from .layout import (KVALUES_FP4, KVALUES_IQ4NL, and32, e8m0_half, f16_at, iq4nl_value, or32, shl32,
                     shr32, u32_at)

F32 = np.float32


@njit(inline="always")
def dot_q4_0(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(n16):
        q = np.int32(w[p + 2 + j])
        s += F32((q & 15) - 8) * x[xo + j] + F32((q >> 4) - 8) * x[xo + 16 + j]
    return f16_at(w, p) * s


@njit(inline="always")
def dot_q4_1(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(n16):
        q = np.int32(w[p + 4 + j])
        s += F32(q & 15) * x[xo + j] + F32(q >> 4) * x[xo + 16 + j]
    return f16_at(w, p) * s + f16_at(w, p + 2) * (xs[so] + xs[so + 1])


@njit(inline="always")
def dot_q4_0_x4(w, p, x, xo, xs, so, n16):
    """4 consecutive Q4_0 blocks in one loop (4 sums): 2.1x faster than 4 calls of a 1-block loop."""
    s0 = s1 = s2 = s3 = F32(0)
    for j in range(n16):
        a = np.int32(w[p + 2 + j])
        b = np.int32(w[p + 20 + j])
        c = np.int32(w[p + 38 + j])
        e = np.int32(w[p + 56 + j])
        s0 += F32(and32(a, 15)) * x[xo + j] + F32(shr32(a, 4)) * x[xo + 16 + j]
        s1 += F32(and32(b, 15)) * x[xo + 32 + j] + F32(shr32(b, 4)) * x[xo + 48 + j]
        s2 += F32(and32(c, 15)) * x[xo + 64 + j] + F32(shr32(c, 4)) * x[xo + 80 + j]
        s3 += F32(and32(e, 15)) * x[xo + 96 + j] + F32(shr32(e, 4)) * x[xo + 112 + j]
    k = so  # Σ (q - 8)·x = Σ q·x - 8·Σx
    return ((f16_at(w, p) * (s0 - F32(8) * (xs[k] + xs[k + 1]))
             + f16_at(w, p + 18) * (s1 - F32(8) * (xs[k + 2] + xs[k + 3])))
            + (f16_at(w, p + 36) * (s2 - F32(8) * (xs[k + 4] + xs[k + 5]))
               + f16_at(w, p + 54) * (s3 - F32(8) * (xs[k + 6] + xs[k + 7]))))


@njit(inline="always")
def dot_q4_1_x4(w, p, x, xo, xs, so, n16):
    """4 consecutive Q4_1 blocks in one loop (as :func:`dot_q4_0_x4`)."""
    s0 = s1 = s2 = s3 = F32(0)
    for j in range(n16):
        a = np.int32(w[p + 4 + j])
        b = np.int32(w[p + 24 + j])
        c = np.int32(w[p + 44 + j])
        e = np.int32(w[p + 64 + j])
        s0 += F32(and32(a, 15)) * x[xo + j] + F32(shr32(a, 4)) * x[xo + 16 + j]
        s1 += F32(and32(b, 15)) * x[xo + 32 + j] + F32(shr32(b, 4)) * x[xo + 48 + j]
        s2 += F32(and32(c, 15)) * x[xo + 64 + j] + F32(shr32(c, 4)) * x[xo + 80 + j]
        s3 += F32(and32(e, 15)) * x[xo + 96 + j] + F32(shr32(e, 4)) * x[xo + 112 + j]
    k = so
    return ((f16_at(w, p) * s0 + f16_at(w, p + 2) * (xs[k] + xs[k + 1])
             + f16_at(w, p + 20) * s1 + f16_at(w, p + 22) * (xs[k + 2] + xs[k + 3]))
            + (f16_at(w, p + 40) * s2 + f16_at(w, p + 42) * (xs[k + 4] + xs[k + 5])
               + f16_at(w, p + 60) * s3 + f16_at(w, p + 62) * (xs[k + 6] + xs[k + 7])))


@njit(inline="always")
def dot_q5_0(w, p, x, xo, xs, so, n16):
    qh = np.int32(u32_at(w, p + 2))
    s = F32(0)
    for j in range(16):
        q = np.int32(w[p + 6 + j])
        h0 = shl32(and32(shr32(qh, j), 1), 4)
        h1 = shl32(and32(shr32(qh, j + 16), 1), 4)
        s += F32(or32(and32(q, 15), h0)) * x[xo + j] + F32(or32(shr32(q, 4), h1)) * x[xo + 16 + j]
    return f16_at(w, p) * (s - F32(16) * (xs[so] + xs[so + 1]))


@njit(inline="always")
def dot_q5_1(w, p, x, xo, xs, so, n16):
    qh = np.int32(u32_at(w, p + 4))
    s = F32(0)
    for j in range(16):
        q = np.int32(w[p + 8 + j])
        h0 = shl32(and32(shr32(qh, j), 1), 4)
        h1 = shl32(and32(shr32(qh, j + 16), 1), 4)
        s += F32(or32(and32(q, 15), h0)) * x[xo + j] + F32(or32(shr32(q, 4), h1)) * x[xo + 16 + j]
    return f16_at(w, p) * s + f16_at(w, p + 2) * (xs[so] + xs[so + 1])


@njit(inline="always")
def dot_q8_0(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(2 * n16):
        s += F32(np.int8(w[p + 2 + j])) * x[xo + j]
    return f16_at(w, p) * s


@njit(inline="always")
def dot_q8_0_x4(w, p, x, xo, xs, so, n16):
    """4 consecutive Q8_0 blocks in one loop (4 sums): 1.2x faster than 4 calls of a 1-block loop."""
    s0 = s1 = s2 = s3 = F32(0)
    for j in range(2 * n16):
        s0 += F32(np.int8(w[p + 2 + j])) * x[xo + j]
        s1 += F32(np.int8(w[p + 36 + j])) * x[xo + 32 + j]
        s2 += F32(np.int8(w[p + 70 + j])) * x[xo + 64 + j]
        s3 += F32(np.int8(w[p + 104 + j])) * x[xo + 96 + j]
    return (f16_at(w, p) * s0 + f16_at(w, p + 34) * s1) + (f16_at(w, p + 68) * s2 + f16_at(w, p + 102) * s3)


@njit(inline="always")
def dot_iq4_nl(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(n16):
        q = w[p + 2 + j]
        s += KVALUES_IQ4NL[q & 15] * x[xo + j] + KVALUES_IQ4NL[q >> 4] * x[xo + 16 + j]
    return f16_at(w, p) * s


@njit(inline="always")
def dot_iq4_nl_x4(w, p, x, xo, xs, so, n16):
    """4 consecutive IQ4_NL blocks in one loop, the code values by :func:`.layout.iq4nl_value`."""
    s0 = s1 = s2 = s3 = F32(0)
    for j in range(n16):
        a = np.int32(w[p + 2 + j])
        b = np.int32(w[p + 20 + j])
        c = np.int32(w[p + 38 + j])
        e = np.int32(w[p + 56 + j])
        s0 += iq4nl_value(and32(a, 15)) * x[xo + j] + iq4nl_value(shr32(a, 4)) * x[xo + 16 + j]
        s1 += iq4nl_value(and32(b, 15)) * x[xo + 32 + j] + iq4nl_value(shr32(b, 4)) * x[xo + 48 + j]
        s2 += iq4nl_value(and32(c, 15)) * x[xo + 64 + j] + iq4nl_value(shr32(c, 4)) * x[xo + 80 + j]
        s3 += iq4nl_value(and32(e, 15)) * x[xo + 96 + j] + iq4nl_value(shr32(e, 4)) * x[xo + 112 + j]
    return (f16_at(w, p) * s0 + f16_at(w, p + 18) * s1) + (f16_at(w, p + 36) * s2 + f16_at(w, p + 54) * s3)


@njit(inline="always")
def dot_mxfp4(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(n16):
        q = w[p + 1 + j]
        s += KVALUES_FP4[q & 15] * x[xo + j] + KVALUES_FP4[q >> 4] * x[xo + 16 + j]
    return e8m0_half(w[p]) * s


@njit(inline="always")
def dot_f16(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(32):
        s += f16_at(w, p + 2 * j) * x[xo + j]
    return s


@njit(inline="always")
def dot_bf16(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(2 * n16):
        s += bits_f32((np.int64(w[p + 2 * j]) << 16) | (np.int64(w[p + 2 * j + 1]) << 24)) * x[xo + j]
    return s
