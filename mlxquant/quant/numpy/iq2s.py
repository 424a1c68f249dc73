"""IQ2_S: 2.5625 bits per weight, groups of 8 weights on a 1024-point grid.

ggml-quants.c: ``quantize_row_iq2_s_impl``, ``iq2_find_best_neighbour``, ``dequantize_row_iq2_s``;
the grid and search state are :func:`mlxquant.quant.grids_iq2.search_state` ("IQ2_S"). The search
is the one of the 3-bit grid types (:func:`~.iq3.grid_search`) with groups of 8 weights, levels
0..2 (values 1, 3, 5), 19 trial scales ``(5 + 0.1*is)/max`` and sub-blocks of 16 weights (two
grid points each); groups left off the grid by the best trial are re-rounded once with its scale.
``ggml_quantize_chunk`` runs it with and without an importance matrix; the weights are then
``imatrix[j] * sqrt(sigma2 + x[j]**2)``, else ``sigma2/4 + x[j]**2`` (``sigma2 = 2/256 * sum x**2``
over the super-block). Signs are stored as they are (8 bits per group, no parity rule).

IQ2_S block (82 bytes, 256 weights = 16 sub-blocks of 16 = 32 groups of 8)::

    byte  0  1   2 ......... 33   34 ........ 65   66 .. 73   74 ....... 81
          | d:f16 | rows lo[32]   | signs[32]      | qh[8]     | scales[8]   |
    group g (= 2*sub-block + k): row = lo[g] | ((qh[g/4] >> 2*(g%4)) & 3) << 8, signs[g] bit j;
    sub-block ib: l = scales[ib/2] >> 4*(ib%2) & 15; weight = d * (0.5 + l) * 0.25 *
    iq2s_grid[row][j] * sign

Zero sub-blocks (max |x| < 1e-8) leave their bytes 0 and scale 0; a super-block whose scales are
all 0 keeps d = 0 and its rows and signs. Where ggml aborts (the neighbour search overflows) the
codec raises :class:`~.iq3.GridSearchAbort`; the dequantizer flips sign bits as the compiled C.
"""

from __future__ import annotations

import functools

import numpy as np

from ..grids_iq2 import IQ2S_GRID, search_state
from .iq3 import GridCodec, GridSearch, GridSearchAbort, grid_search, neighbour_table
from .numeric import f16_to_f32, field, fp16_bytes, nearest_int_c, seq_sum

_F32 = np.float32
EPS = _F32(1e-8)  # GROUP_MAX_EPS_IQ2_S
_STEP = 128  # super-blocks per chunk
_IEEE = dict(over="ignore", invalid="ignore", divide="ignore", under="ignore")


@functools.cache
def iq2s_search() -> GridSearch:
    s = search_state("IQ2_S")
    return GridSearch("IQ2_S", 8, 2, 2, 3, 9, 0.1, False,
                      s.kmap, s.grid.astype(_F32), *neighbour_table(s.kmap, s.neighbours))


def _encode(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """(n, 256) float32 super-blocks and (n, 256) imatrix rows (or None) -> (n, 82) uint8."""
    n = x.shape[0]
    m = 16 * n
    xt = np.ascontiguousarray(x.reshape(m, 16).T)              # (16, m): column 16*blk + ib
    xs = np.ascontiguousarray(x.T)                             # (256, n)
    sigma2 = np.repeat(_F32(2) * seq_sum(xs * xs, axis=0) / _F32(256), 16)[None]  # (1, m)
    if qw is None:
        wt = _F32(0.25) * sigma2 + xt * xt
    else:
        wt = np.ascontiguousarray(qw.reshape(m, 16).T) * np.sqrt(sigma2 + xt * xt)
    wst = np.sqrt(wt)
    neg = ~(xt >= 0)
    xval = np.where(neg, -xt, xt)
    signs = (neg.reshape(2, 8, m).astype(np.int32) << np.arange(8)[None, :, None]).sum(axis=1)  # (2, m)
    mx = xval.max(axis=0)
    active = ~(mx < EPS)

    scales = np.zeros(m, dtype=_F32)
    rows = np.zeros((2, m), dtype=np.int32)
    ai = np.flatnonzero(active)
    if ai.size:
        sc, gi = grid_search(iq2s_search(), xval[:, ai], wt[:, ai], wst[:, ai], mx[ai])
        flip = sc < 0
        sc = np.where(flip, -sc, sc)
        signs[:, ai[flip]] ^= 255
        if not (sc >= 0).all():
            raise GridSearchAbort("IQ2_S: ggml aborts on this input (GGML_ASSERT(scale >= 0): "
                                  "a sub-block scale is NaN)")
        scales[ai] = sc
        rows[:, ai] = gi

    scales = scales.reshape(n, 16)
    max_scale = scales.max(axis=1)
    zero = max_scale == 0
    d = max_scale / _F32(31)
    ls = np.clip(nearest_int_c(_F32(0.5) * ((_F32(1) / d)[:, None] * scales - _F32(1))), 0, 15)
    ls = np.where(zero[:, None], 0, ls)
    act = np.repeat(active.reshape(n, 16), 2, axis=1)          # (n, 32) per group
    rows = np.where(act, rows.reshape(2, n, 16).transpose(1, 2, 0).reshape(n, 32), 0)
    signs = np.where(act, signs.reshape(2, n, 16).transpose(1, 2, 0).reshape(n, 32), 0)

    out = np.empty((n, 82), dtype=np.uint8)
    out[:, 0:2] = fp16_bytes(np.where(zero, _F32(0), d * _F32(0.9875)))
    out[:, 2:34] = rows & 255
    out[:, 34:66] = signs
    out[:, 66:74] = ((rows >> 8).reshape(n, 8, 4) << (2 * np.arange(4))).sum(axis=2)
    out[:, 74:82] = ls[:, 0::2] | (ls[:, 1::2] << 4)
    return out


def _decode(b: np.ndarray) -> np.ndarray:
    """(n, 82) blocks -> (n, 256) float32, as dequantize_row_iq2_s."""
    n = b.shape[0]
    d = f16_to_f32(field(b, 0, 2).view("<u2").reshape(n))      # (n,)
    sc = field(b, 74, 82).astype(np.int64)
    nib = np.stack([sc & 15, sc >> 4], axis=2).reshape(n, 16)  # (n, 16) per sub-block
    db = (d[:, None] * (_F32(0.5) + nib.astype(_F32))) * _F32(0.25)
    g = np.arange(32)
    qh = field(b, 66, 74).astype(np.int64)
    rows = field(b, 2, 34).astype(np.int64) | (((qh[:, g // 4] >> (2 * (g % 4))) & 3) << 8)  # (n, 32)
    vals = IQ2S_GRID[rows].astype(_F32).reshape(n, 16, 16)    # (n, sub-block, 16)
    out = np.empty((n, 256), dtype=_F32)
    np.multiply(db[:, :, None], vals, out=out.reshape(n, 16, 16))
    neg = (field(b, 34, 66)[:, :, None] >> np.arange(8, dtype=np.uint8)) & 1    # (n, 32, 8)
    bits = out.view(np.uint32)
    bits ^= neg.reshape(n, 256).astype(np.uint32) << np.uint32(31)
    return out


class IQ2_S(GridCodec, qtype="IQ2_S"):
    encode = staticmethod(_encode)
    step = _STEP

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        with np.errstate(**_IEEE):
            return _decode(np.ascontiguousarray(blocks))
