"""Block dot products of the 32-weight types without a vector-IR row product (MXFP4, the float
kernel behind its integer one):
``Σ w·x`` over one block, straight from the codes (the fused decode kernels' inner step). The
other 32-weight types are in :mod:`.vdots`.

``dot_<type>(w, p, x, xo, xs, so, n16)``: the block at byte ``p`` of the uint8 row ``w`` against
``x[xo:xo + block]``; ``xs[so + i]`` is the precomputed sum of ``x`` over the block's ``i``-th
16 weights; ``n16`` is 16, given at run time where that vectorized better (see :mod:`.fused`).
Each returns a float32. Block layouts: see :mod:`.layout`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layout import KVALUES_FP4, e8m0_half

F32 = np.float32


@njit(inline="always")
def dot_mxfp4(w, p, x, xo, xs, so, n16):
    s = F32(0)
    for j in range(n16):
        q = w[p + 1 + j]
        s += KVALUES_FP4[q & 15] * x[xo + j] + KVALUES_FP4[q >> 4] * x[xo + 16 + j]
    return e8m0_half(w[p]) * s
