"""Block dot products of the ternary types TQ1_0 and TQ2_0 straight from the codes (the other
256-weight types are in :mod:`.vdots`): same contract as :mod:`.dots`. Layouts: see
:mod:`.layout`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layout import f16_at, trit

F32 = np.float32


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
