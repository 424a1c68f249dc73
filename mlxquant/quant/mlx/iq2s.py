"""IQ2_S on MLX arrays (twin of ``mlxquant/quant/numpy/iq2s.py``: same algorithm, same function
names, same bytes as ggml's ``quantize_row_iq2_s_impl`` and ``dequantize_row_iq2_s``).

The search is the 3-bit types' :func:`~.iq3.grid_search` (all trials at once, off-grid groups
bucketed by neighbour-list length) with IQ2_S's parameters: groups of 8 weights, levels 0..2,
19 trial scales, sub-blocks of 16 weights (two grid points each). The block layout and ggml's
behaviour are drawn in the NumPy module; in short::

    byte  0  1   2 ......... 33   34 ........ 65   66 .. 73   74 ....... 81
          | d:f16 | rows lo[32]   | signs[32]      | qh[8]     | scales[8]   |

Skipped sub-blocks (max |x| < 1e-8) run through the search on zeros and are masked out; where
ggml aborts the chunk raises :class:`~mlxquant.quant.numpy.iq3.GridSearchAbort`.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..codec import Codec
from ..grids_iq2 import IQ2S_GRID
from ..numpy import iq2s as _np
from ..numpy.iq3 import GridSearchAbort
from .codec import in_chunks
from .iq3 import grid_search, mx_search, signed, weighted_rows
from .numeric import F32, fp16_bytes, fp16_from_bytes, nearest_int_c, seq_sum

_GRID = mx.array(IQ2S_GRID.astype(np.float32))    # (1024, 8)

# Weights per evaluated chunk (the search holds (19 trials, 16, sub-blocks) arrays and more).
CHUNK_WEIGHTS = 1 << 16


def _encode(x: mx.array, qw: mx.array | None) -> tuple[mx.array, mx.array]:
    """(n, 256) float32 super-blocks and (n, 256) imatrix rows (or None) -> (n, 82) uint8 and the
    abort flag."""
    n = x.shape[0]
    m = 16 * n
    xt = mx.contiguous(x.reshape(m, 16).T)                            # (16, m): column 16*blk + ib
    xs = mx.contiguous(x.T)                                           # (256, n)
    sigma2 = mx.repeat((2.0 * seq_sum(xs * xs, axis=0)) / 256.0, 16)[None]     # (1, m)
    if qw is None:
        wt = 0.25 * sigma2 + xt * xt
    else:
        wt = mx.contiguous(qw.reshape(m, 16).T) * mx.sqrt(sigma2 + xt * xt)
    neg = mx.logical_not(xt >= 0)
    xval = mx.where(neg, -xt, xt)
    pos8 = mx.arange(8, dtype=mx.int32)[None, :, None]
    signs = mx.sum(neg.reshape(2, 8, m).astype(mx.int32) << pos8, axis=1)      # (2, m)
    mxv = mx.max(xval, axis=0)
    active = mx.logical_not(mxv < float(_np.EPS))

    sc, gi, bad = grid_search(mx_search(_np.iq2s_search()), mx.where(active, xval, 0.0),
                              mx.where(active, wt, 0.0), mx.where(active, mx.sqrt(wt), 0.0),
                              mx.where(active, mxv, 1.0))
    flip = active & (sc < 0)
    sc = mx.where(flip, -sc, sc)
    signs = mx.where(flip, signs ^ 255, signs)
    bad = bad | mx.any(active & mx.logical_not(sc >= 0))
    scales = mx.where(active, sc, 0.0).reshape(n, 16)

    max_scale = mx.max(scales, axis=1)
    zero = max_scale == 0
    d = max_scale / 31.0
    ls = mx.clip(nearest_int_c(0.5 * ((1.0 / d)[:, None] * scales - 1.0)), 0, 15)
    ls = mx.where(zero[:, None], 0, ls)
    act = mx.repeat(active.reshape(n, 16), 2, axis=1)                 # (n, 32) per group
    rows = mx.where(act, gi.reshape(2, n, 16).transpose(1, 2, 0).reshape(n, 32), 0)
    signs = mx.where(act, signs.reshape(2, n, 16).transpose(1, 2, 0).reshape(n, 32), 0)
    qh = mx.sum((rows >> 8).reshape(n, 8, 4) << (2 * mx.arange(4, dtype=mx.int32)), axis=2)
    out = mx.concatenate([
        fp16_bytes(mx.where(zero, 0.0, d * 0.9875)),
        (rows & 255).astype(mx.uint8),
        signs.astype(mx.uint8),
        qh.astype(mx.uint8),
        (ls[:, 0::2] | (ls[:, 1::2] << 4)).astype(mx.uint8),
    ], axis=1)
    return out, bad


def _decode(b: mx.array) -> mx.array:
    """(n, 82) blocks -> (n, 256) float32, as dequantize_row_iq2_s."""
    n = b.shape[0]
    d = fp16_from_bytes(b[:, 0:2])                                    # (n,)
    sc = b[:, 74:82].astype(mx.int32)
    nib = mx.stack([sc & 15, sc >> 4], axis=2).reshape(n, 16)         # (n, 16) per sub-block
    db = (d[:, None] * (0.5 + nib.astype(F32))) * 0.25
    g = mx.arange(32, dtype=mx.int32)
    qh = b[:, 66:74].astype(mx.int32)
    rows = b[:, 2:34].astype(mx.int32) | (((qh[:, g // 4] >> (2 * (g % 4))) & 3) << 8)  # (n, 32)
    vals = mx.take(_GRID, rows, axis=0).reshape(n, 16, 16)           # (n, sub-block, 16)
    neg = (b[:, 34:66, None] >> mx.arange(8, dtype=mx.uint8)) & 1     # (n, 32, 8)
    return signed(db, vals, neg.reshape(n, 256))


class IQ2_S(Codec, qtype="IQ2_S", backend="mlx"):
    @classmethod
    def _run(cls, x: mx.array, qw: mx.array | None) -> mx.array:
        out, bad = _encode(x, qw)
        mx.eval(out, bad)
        if bad.item():
            raise GridSearchAbort("IQ2_S: ggml aborts on this input (no grid neighbour closer "
                                  "than FLT_MAX, or a NaN scale: the weights overflow float32)")
        return out

    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        x = x.astype(F32)
        return in_chunks(lambda b0, b1: cls._run(x[b0:b1], None), x.shape[0], 256, CHUNK_WEIGHTS)

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        return weighted_rows(cls._run, x, imatrix, 82 * (x.shape[1] // 256), CHUNK_WEIGHTS)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        return _decode(blocks)
