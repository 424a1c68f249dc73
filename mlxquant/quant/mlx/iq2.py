"""IQ2_XXS and IQ2_XS on MLX arrays (twin of ``mlxquant/quant/numpy/iq2.py``: same algorithm,
same function names, same bytes as ggml's ``quantize_row_iq2_xxs_impl`` /
``quantize_row_iq2_xs_impl`` and ``dequantize_row_iq2_xxs`` / ``dequantize_row_iq2_xs``).

The algorithm, the block layouts and the exactness notes are in the NumPy module; in short::

    IQ2_XXS (66 bytes)  | d:f16 | 8 x (u32 grid rows of 4 groups, u32 signs 7x4 | ls << 28) |
    IQ2_XS  (74 bytes)  | d:f16 | 32 x u16 (grid row | signs << 9) | 8 x scale nibbles      |

Both types need an importance matrix. The search runs on position-major ``(sub, sub-blocks)``
arrays as the 3-bit types' (:mod:`.iq3`): IQ2_XS's 19-trial search with a re-round of the
groups left off the grid *is* :func:`~.iq3.grid_search` on the 512-point grid; IQ2_XXS starts
from ``make_qp_quants`` (:func:`.search_scale_min.make_qp_quants`), runs 13 trials around its
scale and re-rounds every group at the best one (:func:`_search_xxs`), with the same trial
batching and bucketed neighbour search (:func:`~.iq3.best_neighbours`). Skipped sub-blocks
(max below GROUP_MAX_EPS, or a ``make_qp_quants`` scale <= 0) run on zeros and are masked out;
where ggml aborts the chunk raises :class:`~mlxquant.errors.QuantInputError`.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np

from ...errors import QuantInputError
from ..codec import Codec
from ..grids_iq2 import IQ2XS_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS, search_state
from ..numpy import iq2 as _np
from ..numpy.iq3 import GridSearch, neighbour_table
from .iq3 import (
    MxGridSearch,
    by_group,
    grid_codes,
    grid_sums,
    best_neighbours,
    grid_search,
    mx_search,
    signed,
    weighted_rows,
)
from .numeric import F32, GROUP_MAX_EPS, first_index, fp16_bytes, fp16_from_bytes, nearest_int_c, seq_sum
from .search_scale_min import make_qp_quants

_INF = float("inf")
_KSIGNS = mx.array(KSIGNS_IQ2XS)
_GRID_XXS = mx.array(IQ2XXS_GRID.astype(np.float32))    # (256, 8)
_GRID_XS = mx.array(IQ2XS_GRID.astype(np.float32))      # (512, 8)
_XXS_TRIALS = mx.array(np.array([np.float32(5) + np.float32(t) * np.float32(0.1)
                                 for t in range(-6, 7)], np.float32))

# Weights per evaluated chunk (the trial arrays hold 13-19 copies of the chunk and more).
CHUNK_WEIGHTS = 1 << 16


@functools.cache
def iq2_search(qtype: str) -> MxGridSearch:
    """IQ2_XXS's or IQ2_XS's grid as a :class:`~.iq3.MxGridSearch` (levels 0..2 of 8 weights;
    IQ2_XS: 2 groups of a 16-weight sub-block, 19 trials; IQ2_XXS: 4 groups of 32, its trials
    are :data:`_XXS_TRIALS`)."""
    st = search_state(qtype)
    groups = 4 if qtype == "IQ2_XXS" else 2
    gs = GridSearch(qtype, 8, groups, 2, 3, 9, 0.1, False, st.kmap, st.grid.astype(np.float32),
                    *neighbour_table(st.kmap, st.neighbours))
    return mx_search(gs)


def _prepare(x: mx.array, qw: mx.array, sub: int) -> tuple[mx.array, ...]:
    """Per 256-block: weights, ``sqrt`` weights, |x| with the parity flip and 7-bit sign codes,
    position-major: x, qw (n, 256) -> (sub, m) float32 x3 and (sub/8, m) int32, m = n*256/sub."""
    n = x.shape[0]
    m = n * 256 // sub
    xs = mx.contiguous(x.T)                                           # (256, n)
    sigma2 = mx.repeat(seq_sum(xs * xs, axis=0) / 256.0, 256 // sub)  # (m,)
    xt = mx.contiguous(x.reshape(m, sub).T)                           # (sub, m)
    wt = mx.contiguous(qw.reshape(m, sub).T) * mx.sqrt(sigma2[None] + xt * xt)
    ng = sub // 8
    neg = mx.logical_not(xt >= 0).reshape(ng, 8, m)
    pos8 = mx.arange(8, dtype=mx.int32)[None, :, None]
    s = mx.sum(neg.astype(mx.int32) << pos8, axis=1)                  # (ng, m)
    ax = ((wt * xt) * xt).reshape(ng, 8, m)
    nan = mx.isnan(ax)
    ax = mx.where(nan, _INF, ax)
    ax = mx.where(nan & (pos8 == 0), -_INF, ax)                      # nothing is < a NaN first value
    imin = first_index(ax == mx.min(ax, axis=1, keepdims=True), axis=1)      # (ng, m)
    odd = (mx.sum(neg.astype(mx.int32), axis=1) % 2) == 1
    flip = (odd[:, None] & (pos8 == imin[:, None])).reshape(sub, m)
    xval = mx.where(neg.reshape(sub, m), -xt, xt)
    xval = mx.where(flip, -xval, xval)
    s = mx.where(odd, s ^ mx.left_shift(1, imin), s) & 127
    return wt, mx.sqrt(wt), xval, s


def _search_xxs(g: MxGridSearch, w: mx.array, wa: mx.array, xv: mx.array,
                active: mx.array) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """32-weight sub-blocks, position-major (32, m) -> (kept (m,), scale (m,), rows (4, m), abort
    flag); ``kept``: active and ``make_qp_quants``'s scale > 0 (ggml skips the others)."""
    xv = mx.where(active, xv, 0.0)
    w = mx.where(active, w, 0.0)
    qp, _ = make_qp_quants(xv.T, 4, w.T)
    kept = active & mx.logical_not(qp * 3.0 <= 0)
    xv, w, wa = mx.where(kept, xv, 0.0), mx.where(kept, w, 0.0), mx.where(kept, wa, 0.0)
    scale = mx.where(kept, qp, 1.0)
    a = xv.shape[1]
    nt = _XXS_TRIALS.shape[0]
    wx = w * xv
    xg, wg = by_group(g, xv), by_group(g, wa)
    n_g = 4 * a

    inv = _XXS_TRIALS[:, None] / (scale * 3.0)[None]                 # (T, a)
    u = grid_codes(g, xv, inv)                                            # (T, 4, a)
    sc_t = mx.broadcast_to((1.0 / inv)[:, None, :], u.shape).reshape(-1)
    src = mx.tile(mx.arange(n_g, dtype=mx.int32), nt)
    gi_t, bad = best_neighbours(g, u.reshape(-1), (mx.take(g.kmap, u) < 0).reshape(-1),
                                xg, wg, src, sc_t)
    gi_t = gi_t.reshape(u.shape)
    sqx, sq2 = grid_sums(g, wx, w, gi_t)

    best = mx.zeros((a,), F32)
    rows = mx.zeros((4, a), mx.int32)
    for t in range(nt):
        take = (sq2[t] > 0) & (sqx[t] * sqx[t] > best * sq2[t])
        ratio = sqx[t] / sq2[t]
        scale = mx.where(take, ratio, scale)
        best = mx.where(take, ratio * sqx[t], best)
        rows = mx.where(take[None], gi_t[t], rows)

    redo = scale > 0                                                  # final levels at that scale
    sc = mx.where(redo, scale, 1.0)
    u = grid_codes(g, xv, (1.0 / sc)[None])[0]                            # (4, a)
    need = redo[None] & (mx.take(g.kmap, u) < 0)
    gi, bad2 = best_neighbours(g, u.reshape(-1), need.reshape(-1), xg, wg,
                               mx.arange(n_g, dtype=mx.int32),
                               mx.broadcast_to(sc[None], u.shape).reshape(-1))
    rows = mx.where(redo[None], gi.reshape(u.shape), rows)
    sqx, sq2 = grid_sums(g, wx, w, rows[None])
    scale = mx.where(redo, mx.where(sq2[0] > 0, sqx[0] / sq2[0], scale), scale)
    return kept, scale, rows, bad | bad2


def _finish(scales: mx.array) -> tuple[mx.array, mx.array, mx.array]:
    """(n, nsub) sub-block scales (0 where skipped) -> (d bytes (n, 2), ls (n, nsub), zero (n,))."""
    max_scale = mx.max(scales, axis=1)
    zero = max_scale == 0
    d = max_scale / 31.0
    ls = mx.clip(nearest_int_c(0.5 * ((1.0 / d)[:, None] * scales - 1.0)), 0, 15)
    return fp16_bytes(mx.where(zero, 0.0, d)), ls, zero


def _encode_xxs(x: mx.array, qw: mx.array) -> tuple[mx.array, mx.array]:
    n = x.shape[0]
    g = iq2_search("IQ2_XXS")
    w, wa, xv, signs = _prepare(x, qw, 32)                           # (32, 8n), signs (4, 8n)
    active = mx.logical_not(mx.max(xv, axis=0) < GROUP_MAX_EPS)
    kept, scale, rows, bad = _search_xxs(g, w, wa, xv, active)
    flip = kept & (scale < 0)
    scale = mx.where(flip, -scale, scale)
    signs = mx.where(flip, signs ^ 127, signs)
    scales = mx.where(kept, scale, 0.0).reshape(n, 8)
    bad = bad | mx.any(mx.isnan(scales))
    dh, ls, zero = _finish(scales)
    keep = kept.reshape(n, 8)
    rows = rows.reshape(4, n, 8)
    signs = signs.reshape(4, n, 8)
    w0 = mx.zeros((n, 8), mx.uint32)
    w1 = ls.astype(mx.uint32) << 28
    for k in range(4):
        w0 = w0 | (mx.where(keep, rows[k], 0).astype(mx.uint32) << (8 * k))
        w1 = w1 | (mx.where(keep, signs[k], 0).astype(mx.uint32) << (7 * k))
    q2 = mx.where(zero[:, None, None], 0, mx.stack([w0, w1], axis=2)).astype(mx.uint32)   # (n, 8, 2)
    out = mx.concatenate([dh, mx.contiguous(q2).view(mx.uint8).reshape(n, 64)], axis=1)
    return out, bad


def _encode_xs(x: mx.array, qw: mx.array) -> tuple[mx.array, mx.array]:
    n = x.shape[0]
    w, wa, xv, signs = _prepare(x, qw, 16)                           # (16, 16n), signs (2, 16n)
    mxv = mx.max(xv, axis=0)
    active = mx.logical_not(mxv < GROUP_MAX_EPS)
    scale, rows, bad = grid_search(iq2_search("IQ2_XS"), mx.where(active, xv, 0.0),
                                   mx.where(active, w, 0.0), mx.where(active, wa, 0.0),
                                   mx.where(active, mxv, 1.0))
    flip = active & (scale < 0)
    scale = mx.where(flip, -scale, scale)
    signs = mx.where(flip, signs ^ 127, signs)
    scales = mx.where(active, scale, 0.0).reshape(n, 16)
    bad = bad | mx.any(mx.isnan(scales))
    dh, ls, zero = _finish(scales)
    q2 = mx.where(active, rows | (signs << 9), 0)                     # (2, 16n)
    q2 = q2.reshape(2, n, 16).transpose(1, 2, 0).reshape(n, 32)
    q2 = mx.where(zero[:, None], 0, q2).astype(mx.uint16)
    out = mx.concatenate([dh, mx.contiguous(q2).view(mx.uint8).reshape(n, 64),
                          (ls[:, 0::2] | (ls[:, 1::2] << 4)).astype(mx.uint8)], axis=1)
    return out, bad


def _signs(sign7: mx.array) -> mx.array:
    """(...,) 7-bit sign codes -> (..., 8) sign bits (ksigns_iq2xs: the 8th is the parity)."""
    s = mx.take(_KSIGNS, sign7.astype(mx.int32))
    return (s[..., None] >> mx.arange(8, dtype=mx.uint8)) & 1


class _IQ2(Codec):
    """Shared driver: the imatrix is required (the API checks); blocks are independent."""

    @staticmethod
    def _encode(x: mx.array, qw: mx.array) -> tuple[mx.array, mx.array]:
        raise NotImplementedError

    @classmethod
    def _run(cls, x: mx.array, qw: mx.array) -> mx.array:
        out, bad = cls._encode(x, qw)
        mx.eval(out, bad)
        if bad.item():
            raise _np._aborts(cls.qtype.name, "no neighbour at a finite distance, or a NaN "
                              "sub-block scale")
        return out

    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        raise QuantInputError(f"{cls.qtype.name}: this type needs an importance matrix (imatrix)")

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        return weighted_rows(cls._run, x, imatrix, cls.qtype.row_bytes(x.shape[1]), CHUNK_WEIGHTS)


class IQ2_XXS(_IQ2, qtype="IQ2_XXS", backend="mlx"):
    _encode = staticmethod(_encode_xxs)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        n = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, 0:2])                          # (n,)
        q2 = mx.contiguous(blocks[:, 2:66]).view(mx.uint32).reshape(n, 8, 2)
        k = mx.arange(4, dtype=mx.uint32)
        idx = ((q2[:, :, :1] >> (8 * k)) & 0xFF).astype(mx.int32)    # (n, 8, 4)
        neg = _signs((q2[:, :, 1:] >> (7 * k)) & 127)                 # (n, 8, 4, 8)
        db = (d[:, None] * (0.5 + (q2[:, :, 1] >> 28).astype(F32))) * 0.25
        g = mx.take(_GRID_XXS, idx, axis=0).reshape(n, 8, 32)
        return signed(db, g, neg.reshape(n, 256))


class IQ2_XS(_IQ2, qtype="IQ2_XS", backend="mlx"):
    _encode = staticmethod(_encode_xs)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        n = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, 0:2])
        qs = mx.contiguous(blocks[:, 2:66]).view(mx.uint16).reshape(n, 32).astype(mx.int32)
        sc = blocks[:, 66:74].astype(mx.int32)                        # (n, 8)
        ls = mx.stack([sc & 0xF, sc >> 4], axis=2).reshape(n, 16)     # (n, 16) per sub-block
        db = (d[:, None] * (0.5 + ls.astype(F32))) * 0.25
        g = mx.take(_GRID_XS, qs & 511, axis=0).reshape(n, 16, 16)
        return signed(db, g, _signs(qs >> 9).reshape(n, 256))
