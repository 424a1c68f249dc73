"""Tables and constants of the 1-bit i-quants IQ1_S and IQ1_M (ggml-common.h, ggml-quants.c).

Both types store a group of 8 weights as an index into one 2048-point grid of ternary 8-vectors
(``iq1s_grid``, ``NGRID_IQ1S``), shared with the quantizer's search state
(:func:`~mlxquant.quant.grids_iq2.search_state` ``("IQ1_S")``, ggml's ``iq2xs_init_impl`` on
``kgrid_1bit_2048`` with ``nwant = 3``). A grid point's code holds 8 two-bit levels ``l`` in 0..2
(weight ``k``: ``l = (code >> 2k) & 3``); the three tables read them differently::

    level                       0       1       2
    kgrid_1bit_2048 code        0       1       2       (2 bits per weight)
    quantizer grid (the_grid)   1       3       5       (2l + 1)
    iq1s_grid byte (int8)      -1       0       1       (l - 1)

so ``iq1s_grid`` is derived here from the code table rather than stored (the tests check every
entry against ggml's dequantization). A group decodes to ``dl * (iq1s_grid[i][k] + delta)`` with
``delta = +-IQ1S_DELTA``: the quantizer's level ``l`` stands for ``X_P[l]`` (delta +) or
``X_M[l]`` (delta -), the value sets ``x_p`` / ``x_m`` of ``quantize_row_iq1_*_impl``.
"""

from __future__ import annotations

import numpy as np

from .grids_iq2 import KGRID_1BIT_2048, code_levels

F32 = np.float32

NGRID_IQ1S = 2048
IQ1S_DELTA = F32(0.125)  # ggml's IQ1S_DELTA: the shift of the ternary values
IQ1M_DELTA = F32(0.125)  # ggml's IQ1M_DELTA (same value; IQ1_M's quantizer uses this one)
GROUP_MAX_EPS_IQ1_S = F32(1e-12)  # a 32-weight sub-block with max |x| below this is skipped
GROUP_MAX_EPS_IQ1_M = F32(1e-7)   # same for a 16-weight IQ1_M sub-block

# The fudge factors ggml applies to the super-block scale before storing it as float16.
IQ1S_D_FUDGE = F32(1.125)
IQ1M_D_FUDGE = F32(1.1125)

# The ternary values a level stands for, per shift sign (``-1 + delta, delta, 1 + delta`` and
# ``-1 - delta, -delta, 1 - delta``), float32 as ggml computes them; exact.
X_P = np.array([F32(-1) + IQ1S_DELTA, IQ1S_DELTA, F32(1) + IQ1S_DELTA], dtype=F32)
X_M = np.array([F32(-1) - IQ1S_DELTA, -IQ1S_DELTA, F32(1) - IQ1S_DELTA], dtype=F32)
X_PM = np.stack([X_P, X_M])  # (2, 3): row 0 for a + shift, row 1 for a - shift

# Each grid point's levels (0..2), weight k last: (2048, 8) uint8.
IQ1_LEVELS: np.ndarray = code_levels(KGRID_1BIT_2048)
# ggml's iq1s_grid as (2048, 8) int8 (``iq1s_grid[i]`` read as 8 int8 bytes, little-endian).
IQ1S_GRID: np.ndarray = (IQ1_LEVELS.astype(np.int8) - 1)
for _t in (IQ1_LEVELS, IQ1S_GRID, X_P, X_M, X_PM):
    _t.flags.writeable = False
