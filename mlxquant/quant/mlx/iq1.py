"""IQ1_S and IQ1_M on MLX arrays (twin of ``mlxquant/quant/numpy/iq1.py``: same bytes as ggml's
``dequantize_row_iq1_s`` / ``dequantize_row_iq1_m`` and ``quantize_row_iq1_s_impl`` /
``quantize_row_iq1_m_impl``).

Block layouts (drawn in full in the NumPy module)::

    IQ1_S (50 bytes)  | d:f16 | qs[32] grid rows lo | qh[8] u16: rows hi 3x4, l << 12, sign << 15 |
    IQ1_M (56 bytes)  | qs[32] rows lo | qh[16]: rows hi, delta signs | sc[4] u16: l 3x4, d nibbles |

A group of 8 decodes to ``dl * (iq1s_grid[row][k] + delta)``, ``dl = d * (2l + 1)``,
``delta = +-IQ1S_DELTA`` (a plain float32 multiply: no sign-bit trick here).

Quantization follows the NumPy module step by step; what differs is the MLX layout:

- the sort: ggml's ``qsort`` as glibc runs it is stable (ties in index order, ``-0.0 == 0.0``);
  here each weight's rank is counted directly, ``#{j: x_j < x_i} + #{j < i: x_j == x_i}`` (an
  (n, n) comparison per sub-block), so no sort's tie rule is involved on any device;
- prefix sums run position by position (``acc = acc + v[j]``, never ``mx.cumsum``, whose GPU
  scan has another order);
- C's running best over the 1122 (IQ1_S) or 612 (IQ1_M) split candidates stays a loop, but only
  the comparison and two ``where``s are in it (the products are computed for all candidates at
  once; the winning scale is gathered at the end);
- off-grid groups go to :func:`~.iq3.best_neighbours` (bucketed by neighbour-list length) with
  IQ1's value sets as the candidates' values; skipped sub-blocks run on zeros and are masked;
  where ggml aborts (or reads past the block) the chunk raises QuantInputError.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np

from ...errors import QuantInputError
from ..codec import Codec
from ..grids_iq1 import (
    GROUP_MAX_EPS_IQ1_M,
    GROUP_MAX_EPS_IQ1_S,
    IQ1_LEVELS,
    IQ1M_D_FUDGE,
    IQ1S_D_FUDGE,
    IQ1S_DELTA,
    IQ1S_GRID,
    X_PM,
)
from ..grids_iq2 import search_state
from ..numpy.iq3 import GridSearch, neighbour_table
from .codec import in_chunks
from .iq3 import MxGridSearch, best_neighbours, mx_search, weighted_rows
from .numeric import F32, fp16_bits, fp16_bytes, fp16_from_bytes, nearest_int_c, seq_sum

_GRID = mx.array(IQ1S_GRID.astype(np.float32))          # (2048, 8) values -1, 0, 1
_DELTA = float(IQ1S_DELTA)
_LEVELS = mx.array(IQ1_LEVELS.astype(np.int32))         # (2048, 8) levels 0..2
_XPM = mx.array(X_PM.reshape(-1))                       # (6,): X_P then X_M
_FLT_MAX = float(np.finfo(np.float32).max)
_INF = float("inf")

# Weights per evaluated chunk: the split search holds (candidates, sub-blocks) arrays, ~35x the
# chunk for IQ1_S.
CHUNK_WEIGHTS = 1 << 16


def _decode_s(b: mx.array) -> mx.array:
    """(n, 50) blocks -> (n, 256) float32, as dequantize_row_iq1_s."""
    n = b.shape[0]
    d = fp16_from_bytes(b[:, 0:2])                                    # (n,)
    qs = b[:, 2:34].astype(mx.int32).reshape(n, 8, 4)
    qh = mx.contiguous(b[:, 34:50]).view(mx.uint16).reshape(n, 8).astype(mx.int32)
    idx = qs | (((qh[:, :, None] >> (3 * mx.arange(4, dtype=mx.int32))) & 7) << 8)
    delta = mx.where((qh & 0x8000) != 0, -_DELTA, _DELTA)             # (n, 8)
    dl = d[:, None] * (2 * ((qh >> 12) & 7) + 1).astype(F32)
    v = mx.take(_GRID, idx, axis=0) + delta[:, :, None, None]         # (n, 8, 4, 8)
    return (dl[:, :, None, None] * v).reshape(n, 256)


def _decode_m(b: mx.array) -> mx.array:
    """(n, 56) blocks -> (n, 256) float32, as dequantize_row_iq1_m."""
    n = b.shape[0]
    qs = b[:, 0:32].astype(mx.int32).reshape(n, 16, 2)
    qh = b[:, 32:48].astype(mx.int32)                                 # (n, 16)
    sc = mx.contiguous(b[:, 48:56]).view(mx.uint16).reshape(n, 4).astype(mx.int32)
    dh = mx.sum((sc >> 12) << (4 * mx.arange(4, dtype=mx.int32)), axis=1)     # disjoint bits
    d = dh.astype(mx.uint16).view(mx.float16).astype(F32)
    ls = (sc[:, :, None] >> (3 * mx.arange(4, dtype=mx.int32))) & 7   # (n, 4, 4): sub-block 4j+i
    k = mx.arange(2, dtype=mx.int32)
    idx = qs | (((qh[:, :, None] >> (4 * k)) & 7) << 8)               # (n, 16, 2)
    neg = (qh[:, :, None] >> (3 + 4 * k)) & 1
    delta = mx.where(neg == 1, -_DELTA, _DELTA)                       # (n, 16, 2)
    dl = d[:, None] * (2 * ls.reshape(n, 16) + 1).astype(F32)
    v = mx.take(_GRID, idx, axis=0) + delta[..., None]                # (n, 16, 2, 8)
    return (dl[:, :, None, None] * v).reshape(n, 256)


@functools.cache
def iq1_search() -> MxGridSearch:
    """The 2048-point grid's kmap and neighbour lists (shared by IQ1_S and IQ1_M) on MLX."""
    st = search_state("IQ1_S")
    gs = GridSearch("IQ1", 8, 1, 2, 3, 0, 0.1, False, st.kmap, st.grid.astype(np.float32),
                    *neighbour_table(st.kmap, st.neighbours))
    return mx_search(gs)


def _pairs(n: int) -> tuple[mx.array, mx.array]:
    """The splits ``0 <= i1 <= i2 <= n`` in C's loop order (i1 outer), int32."""
    i1, i2 = np.triu_indices(n + 1)
    return mx.array(i1.astype(np.int32)), mx.array(i2.astype(np.int32))


def _prefix(v: mx.array) -> mx.array:
    """(m, n) -> (m, n + 1): ``s[0] = 0; s[j+1] = s[j] + v[j]`` in float32, one add per step."""
    cols = [mx.zeros((v.shape[0],), F32)]
    for j in range(v.shape[1]):
        cols.append(cols[-1] + v[:, j])
    return mx.stack(cols, axis=1)


def _scan(qx: mx.array, q2: mx.array) -> tuple[mx.array, mx.array]:
    """C's running best over candidates: (t, m) sums -> (m,) scale and chosen candidate (-1: none).

    ``if (sumq2 > 0 && sumqx*sumqx > best*sumq2) { scale = sumqx/sumq2; best = scale*sumqx; }``
    from ``best = -FLT_MAX``; the loop keeps only the comparison and the updates of best and pick.
    """
    ratio = qx / q2
    qq = mx.where(q2 > 0, qx * qx, -_INF)         # -inf > anything is false: q2 <= 0 never wins
    rq = ratio * qx
    best = mx.full((qx.shape[1],), -_FLT_MAX, F32)
    pick = mx.full((qx.shape[1],), -1, mx.int32)
    for t in range(qx.shape[0]):
        better = qq[t] > best * q2[t]
        best = mx.where(better, rq[t], best)
        pick = mx.where(better, t, pick)
    scale = mx.take_along_axis(ratio, mx.maximum(pick, 0)[None], axis=0)[0]
    return mx.where(pick >= 0, scale, 0.0), pick


def sort_rank(xb: mx.array) -> mx.array:
    """(m, n) values -> (m, n) int32 position of each weight in ggml's (glibc's stable) sort:
    ascending value, ties (``-0.0 == 0.0`` included) in index order."""
    n = xb.shape[1]
    a, b = xb[:, :, None], xb[:, None, :]                             # i on axis 1, j on axis 2
    before = mx.arange(n)[None, :] < mx.arange(n)[:, None]            # (i, j): j < i
    return mx.sum((b < a) | ((b == a) & before[None]), axis=2).astype(mx.int32)


def _levels(rank: mx.array, i1: mx.array, i2: mx.array) -> mx.array:
    """Sort positions (m, n) and splits (m,) -> (m, n) levels: 0 below i1, 1 below i2, else 2."""
    return (rank >= i1[:, None]).astype(mx.int32) + (rank >= i2[:, None]).astype(mx.int32)


def _split_search_s(xb: mx.array, w: mx.array, order: mx.array) -> tuple[mx.array, mx.array]:
    """IQ1_S's exhaustive split search: (scale, pick) with pick = 2*pair + (0: X_P, 1: X_M)."""
    n = xb.shape[1]
    sx = _prefix(mx.take_along_axis(w * xb, order, axis=1))          # (m, 33)
    sw = _prefix(mx.take_along_axis(w, order, axis=1))
    i1, i2 = _pairs(n)
    sxt, swt = mx.contiguous(sx.T), mx.contiguous(sw.T)               # (n + 1, m)
    a, b, c = sxt[i1] - sxt[0:1], sxt[i2] - sxt[i1], sxt[n : n + 1] - sxt[i2]   # (pairs, m)
    wa, wb, wc = swt[i1] - swt[0:1], swt[i2] - swt[i1], swt[n : n + 1] - swt[i2]
    qx, q2 = [], []
    for v in X_PM:
        v0, v1, v2 = (float(t) for t in v)
        qx.append((a * v0 + b * v1) + c * v2)
        q2.append(((wa * v0) * v0 + (wb * v1) * v1) + (wc * v2) * v2)
    m = xb.shape[0]
    return _scan(mx.stack(qx, axis=1).reshape(-1, m), mx.stack(q2, axis=1).reshape(-1, m))


def _split_search_m(xb: mx.array, w: mx.array, order: mx.array) -> tuple[mx.array, mx.array]:
    """IQ1_M's split search with prefix sums per 8-weight half: (scale, pick) with
    pick = 4*pair + k, k = 2*(first half X_M) + (second half X_M)."""
    n = xb.shape[1]
    wx = mx.take_along_axis(w * xb, order, axis=1)
    ws = mx.take_along_axis(w, order, axis=1)
    half = order >= n // 2
    px = [mx.contiguous(_prefix(mx.where(half == h, wx, 0.0)).T) for h in (0, 1)]   # (17, m)
    pw = [mx.contiguous(_prefix(mx.where(half == h, ws, 0.0)).T) for h in (0, 1)]
    p, mm = X_PM[0], X_PM[1]
    cp1, cp2 = float(p[0] * p[0] - p[1] * p[1]), float(p[1] * p[1] - p[2] * p[2])
    cm1, cm2 = float(mm[0] * mm[0] - mm[1] * mm[1]), float(mm[1] * mm[1] - mm[2] * mm[2])
    p2, m2 = float(p[2]), float(mm[2])
    i1, i2 = _pairs(n)
    qxp, qxm, q2p, q2m = [], [], [], []
    for h in (0, 1):
        tx, tw = px[h][n : n + 1], pw[h][n : n + 1]                   # (1, m)
        sx = px[h][i1] + px[h][i2]                                    # (pairs, m)
        qxp.append(tx * p2 - sx)
        qxm.append(tx * m2 - sx)
        q2p.append(((tw * p2) * p2 + pw[h][i1] * cp1) + pw[h][i2] * cp2)
        q2m.append(((tw * m2) * m2 + pw[h][i1] * cm1) + pw[h][i2] * cm2)
    qx = mx.stack([qxp[0] + qxp[1], qxp[0] + qxm[1], qxm[0] + qxp[1], qxm[0] + qxm[1]], axis=1)
    q2 = mx.stack([q2p[0] + q2p[1], q2p[0] + q2m[1], q2m[0] + q2p[1], q2m[0] + q2m[1]], axis=1)
    m = xb.shape[0]
    return _scan(qx.reshape(-1, m), q2.reshape(-1, m))                # candidate 4*pair + k


def _fit_q(gi: mx.array, sel: mx.array) -> mx.array:
    """(m, g) grid rows and value sets -> (m, 8g) the value of each weight's level."""
    m = gi.shape[0]
    lev = mx.take(_LEVELS, gi, axis=0)                                # (m, g, 8)
    return mx.take(_XPM, sel[:, :, None] * 3 + lev).reshape(m, -1)


def _sub_blocks(xb: mx.array, w: mx.array, eps: float, imatrix_s: bool):
    """Everything ``quantize_row_iq1_*_impl`` does per sub-block (see the NumPy module):
    (m, n) values and weights -> grid rows (m, n/8), scales (m,), value sets (m, n/8), sign
    codes (m,) (0 where ggml skips the sub-block) and the abort flag."""
    m, n = xb.shape
    ng = n // 8
    rank = sort_rank(xb)
    order = mx.argsort(rank, axis=1).astype(mx.int32)                 # a permutation: no ties
    scale, pick = (_split_search_s if imatrix_s else _split_search_m)(xb, w, order)
    live = mx.logical_not((mx.max(mx.abs(xb), axis=1) < eps) | (pick < 0))
    per = 2 if imatrix_s else 4
    i1, i2 = _pairs(n)
    pair, sg = mx.maximum(pick, 0) // per, mx.maximum(pick, 0) % per
    lv = _levels(rank, mx.take(i1, pair), mx.take(i2, pair))          # (m, n)
    neg = scale < 0
    lv = mx.where(neg[:, None], 2 - lv, lv)
    sc = mx.abs(scale)
    sg = mx.where(neg, per - 1 - sg, sg)                              # +/- swapped
    sl = mx.broadcast_to(sg[:, None], (m, ng)) if imatrix_s else mx.stack([sg >> 1, sg & 1], axis=1)
    sl = mx.where(live[:, None], sl, 0)
    lvg = lv.reshape(m, ng, 8)
    u = lvg[:, :, 0]
    for i in range(1, 8):
        u = u | (lvg[:, :, i] << (2 * i))
    g = iq1_search()
    off = (mx.take(g.kmap, u) < 0) & live[:, None]
    xg, wg = xb.reshape(-1, 8), mx.where(live[:, None], w, 0.0).reshape(-1, 8)
    slf = sl.reshape(-1)

    def values(cand: mx.array, idx: mx.array) -> mx.array:
        lev = mx.take(_LEVELS, cand, axis=0)                          # (k, width, 8)
        return mx.take(_XPM, mx.take(slf, idx)[:, None, None] * 3 + lev)

    gi, bad = best_neighbours(g, u.reshape(-1), off.reshape(-1), xg, wg,
                              mx.arange(m * ng, dtype=mx.int32),
                              mx.repeat(mx.where(live, sc, 1.0), ng), values)
    gi = mx.where(live[:, None], gi.reshape(m, ng), 0)
    refit = mx.any(off, axis=1)
    q = _fit_q(gi, sl)
    wq = w * q
    sqx, sq2 = seq_sum(wq * xb, axis=-1), seq_sum(wq * q, axis=-1)
    sc = mx.where(refit & (sqx > 0) & (sq2 > 0), sqx / sq2, sc)
    bad = bad | mx.any(live & mx.isnan(sc))
    return gi, mx.where(live, sc, 0.0), sl, mx.where(live, sg, 0), bad


def _weights(x: mx.array, qw: mx.array | None, n_sub: int) -> tuple[mx.array, mx.array]:
    """(n, 256) super-blocks -> (n * n_sub, 256/n_sub) values and weights."""
    n = x.shape[0]
    xb = x.reshape(n * n_sub, -1)
    if qw is None:
        return xb, xb * xb
    sigma2 = (2.0 * seq_sum(x * x, axis=-1)) / 256.0
    return xb, qw.reshape(xb.shape) * mx.sqrt(mx.repeat(sigma2, n_sub)[:, None] + xb * xb)


def _scale_codes(scales: mx.array, d: mx.array) -> mx.array:
    """``nearest_int(0.5f*(id*scale - 1))`` clamped to 0..7, ``id = 1/d`` (n, k) int32."""
    return mx.clip(nearest_int_c(0.5 * ((1.0 / d)[:, None] * scales - 1.0)), 0, 7)


def _encode_s(x: mx.array, qw: mx.array) -> tuple[mx.array, mx.array]:
    """(n, 256) float32 super-blocks and their imatrix rows -> (n, 50) uint8 and the abort flag."""
    n = x.shape[0]
    xb, w = _weights(x, qw, 8)
    gi, scale, _, sign, bad = _sub_blocks(xb, w, float(GROUP_MAX_EPS_IQ1_S), True)
    gi = gi.reshape(n, 8, 4)
    scales = scale.reshape(n, 8)
    qh = mx.sum((gi >> 8) << (3 * mx.arange(4, dtype=mx.int32)), axis=2)      # disjoint bits
    max_scale = mx.maximum(mx.max(scales, axis=1), 0.0)
    live = max_scale != 0
    d = mx.where(live, max_scale / 15.0, 1.0)
    ls = _scale_codes(scales, d) | (sign.reshape(n, 8) << 3)
    qh = qh | mx.where(live[:, None], ls << 12, 0)
    out = mx.concatenate([
        fp16_bytes(mx.where(live, d * float(IQ1S_D_FUDGE), 0.0)),
        (gi & 255).astype(mx.uint8).reshape(n, 32),
        mx.contiguous(qh.astype(mx.uint16)).view(mx.uint8).reshape(n, 16),
    ], axis=1)
    return out, bad


def _encode_m(x: mx.array, qw: mx.array | None) -> tuple[mx.array, mx.array]:
    """(n, 256) float32 super-blocks and imatrix rows (or None) -> (n, 56) uint8 and the abort flag."""
    n = x.shape[0]
    xb, w = _weights(x, qw, 16)
    gi, scale, sel, _, bad = _sub_blocks(xb, w, float(GROUP_MAX_EPS_IQ1_M), False)
    scales = scale.reshape(n, 16)
    max_scale = mx.maximum(mx.max(scales, axis=1), 0.0)
    live = max_scale != 0
    d = mx.where(live, max_scale / 15.0, 1.0)
    ls = _scale_codes(scales, d)                                      # (n, 16)
    # the final fit of d over the whole super-block, sub-block by sub-block, in C's order
    q = _fit_q(gi, sel) * (2 * ls + 1).astype(F32).reshape(-1, 1)     # (16n, 16)
    wq = w * q
    sqx = seq_sum((wq * xb).reshape(n, 256), axis=-1)
    sq2 = seq_sum((wq * q).reshape(n, 256), axis=-1)
    d = mx.where(sq2 > 0, sqx / sq2, d)
    dh = mx.where(live, fp16_bits(d * float(IQ1M_D_FUDGE)).astype(mx.int32), 0)
    gi = gi.reshape(n, 16, 2)
    qh = (gi[:, :, 0] >> 8) | ((gi[:, :, 1] >> 8) << 4)
    sel = sel.reshape(n, 16, 2)
    qh = qh | mx.where(live[:, None], sel[:, :, 0] * 0x08 + sel[:, :, 1] * 0x80, 0)
    j = mx.arange(4, dtype=mx.int32)
    sc = mx.sum(ls.reshape(n, 4, 4) << (3 * j), axis=2)               # (n, 4)
    sc = sc | (((dh[:, None] >> (4 * j)) & 0xF) << 12)
    sc = mx.where(live[:, None], sc, 0)          # all scales 0: ggml writes no scale or sign bits
    out = mx.concatenate([
        (gi & 255).astype(mx.uint8).reshape(n, 32),
        qh.astype(mx.uint8),
        mx.contiguous(sc.astype(mx.uint16)).view(mx.uint8).reshape(n, 8),
    ], axis=1)
    return out, bad


class _IQ1(Codec):
    """Shared driver: blocks are independent; IQ1_S needs an imatrix (the API checks it)."""

    @staticmethod
    def _encode(x: mx.array, qw: mx.array | None) -> tuple[mx.array, mx.array]:
        raise NotImplementedError

    @classmethod
    def _run(cls, x: mx.array, qw: mx.array | None) -> mx.array:
        out, bad = cls._encode(x, qw)
        mx.eval(out, bad)
        if bad.item():
            raise QuantInputError(
                f"{cls.qtype.name}: values too large for this type: ggml's quantizer finds no grid "
                "neighbour at a finite distance (and then reads past the block) or aborts on a NaN "
                "sub-block scale; scale the tensor down or pick another type")
        return out

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        return weighted_rows(cls._run, x, imatrix, cls.qtype.row_bytes(x.shape[1]), CHUNK_WEIGHTS)


class IQ1_S(_IQ1, qtype="IQ1_S", backend="mlx"):
    _encode = staticmethod(_encode_s)

    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        raise QuantInputError("IQ1_S: this type needs an importance matrix (imatrix); ggml "
                              "aborts without one")

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        return _decode_s(blocks)


class IQ1_M(_IQ1, qtype="IQ1_M", backend="mlx"):
    _encode = staticmethod(_encode_m)

    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        x = x.astype(F32)
        return in_chunks(lambda b0, b1: cls._run(x[b0:b1], None), x.shape[0], 256, CHUNK_WEIGHTS)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        return _decode_m(blocks)
