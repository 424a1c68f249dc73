"""Block dot products of the 32-weight types without a vector-IR row product (IQ4_NL, MXFP4)
and the float rows: ``Σ w·x`` over one block, straight from the codes (the fused decode kernels'
inner step). Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 are in :mod:`.vdots`.

``dot_<type>(w, p, x, xo, xs, so, n16)``: the block at byte ``p`` of the uint8 row ``w`` against
``x[xo:xo + block]``; ``xs[so + i]`` is the precomputed sum of ``x`` over the block's ``i``-th
16 weights; ``n16`` is 16, given at run time where that vectorized better (see :mod:`.fused`).
Each returns a float32.

Shape: the codes are unpacked with integer ops in loops of 16 or 32 over contiguous bytes and
multiplied into one float32 sum per block, the scale applied once to that sum (ggml's
``vec_dot_*`` order of work; the activations stay float32). Written so LLVM vectorizes the loops
(a decode-into-a-buffer form stayed scalar and ran 3.4x slower); halves are converted by F16C
(:func:`.layout.f16_at`). Block layouts: see :mod:`.layout`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ...quant.jit.numeric import bits_f32
from .layout import KVALUES_FP4, KVALUES_IQ4NL, and32, e8m0_half, f16_at, iq4nl_value, shr32

F32 = np.float32


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
