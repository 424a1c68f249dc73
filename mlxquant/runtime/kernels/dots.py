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
converted by F16C (:func:`.layout.f16_at`).
Block layouts: see :mod:`.layout`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ...quant.jit.numeric import bits_f32
from .layout import KVALUES_FP4, KVALUES_IQ4NL, e8m0_half, f16_at, u32_at

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
def dot_q5_0(w, p, x, xo, xs, so, n16):
    qh = np.int32(u32_at(w, p + 2))
    s = F32(0)
    for j in range(16):
        q = np.int32(w[p + 6 + j])
        h0 = ((qh >> j) & 1) << 4
        h1 = ((qh >> (j + 16)) & 1) << 4
        s += F32(((q & 15) | h0) - 16) * x[xo + j] + F32(((q >> 4) | h1) - 16) * x[xo + 16 + j]
    return f16_at(w, p) * s


@njit(inline="always")
def dot_q5_1(w, p, x, xo, xs, so, n16):
    qh = np.int32(u32_at(w, p + 4))
    s = F32(0)
    for j in range(16):
        q = np.int32(w[p + 8 + j])
        h0 = ((qh >> j) & 1) << 4
        h1 = ((qh >> (j + 16)) & 1) << 4
        s += F32((q & 15) | h0) * x[xo + j] + F32((q >> 4) | h1) * x[xo + 16 + j]
    return f16_at(w, p) * s + f16_at(w, p + 2) * (xs[so] + xs[so + 1])


@njit(inline="always")
def dot_q8_0(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(2 * n16):
        s += F32(np.int8(w[p + 2 + j])) * x[xo + j]
    return f16_at(w, p) * s


@njit(inline="always")
def dot_iq4_nl(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(n16):
        q = w[p + 2 + j]
        s += KVALUES_IQ4NL[q & 15] * x[xo + j] + KVALUES_IQ4NL[q >> 4] * x[xo + 16 + j]
    return f16_at(w, p) * s


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
