"""1-bit grid types: IQ1_S (1.5625 bpw) and IQ1_M (1.75 bpw), 256 weights per block.

Follows ggml-quants.c: ``quantize_iq1_s`` / ``quantize_row_iq1_s_impl`` (importance matrix
required), ``quantize_iq1_m`` / ``quantize_row_iq1_m_impl`` (weights ``x*x`` without one),
``iq1_find_best_neighbour2``, ``iq1_sort_helper``, ``dequantize_row_iq1_s`` and
``dequantize_row_iq1_m``; the grid and the search state are :mod:`..grids_iq1` and
:func:`..grids_iq2.search_state` ``("IQ1_S")``.

A sub-block (32 weights for IQ1_S, 16 for IQ1_M) takes ternary values ``X_P = (-0.875, 0.125,
1.125)`` or ``X_M = (-1.125, -0.125, 0.875)`` times a scale. ggml sorts the sub-block's weights
(``qsort`` on (value, index) pairs comparing the value only), builds prefix sums of ``w*x`` and
``w`` in that order and tries every split ``i1 <= i2`` of the sorted list into the three levels,
for each value set (IQ1_M: a set per 8-weight half, 4 combinations), keeping the best weighted
least-squares fit. Groups of 8 levels off the grid go to their best neighbour; the scale is then
refitted. Sub-block scales become 3-bit codes ``l`` of ``d = max_scale / 15`` read as
``d * (2l + 1)``.

IQ1_S block (50 bytes; 8 sub-blocks of 32 = 4 groups of 8)::

    byte  0  1   2 ............... 33  34 .................... 49
          | d:f16 | qs[0:32]          | qh[0:8] as uint16         |
    group k of sub-block ib: grid index qs[4ib + k] | ((qh[ib] >> 3k) & 7) << 8
    qh[ib] bits 12..14: scale code l, bit 15: delta sign (1: X_M)

IQ1_M block (56 bytes; 16 sub-blocks of 16 = 2 groups of 8)::

    byte  0 ............. 31  32 ............ 47  48 ............... 55
          | qs[0:32]          | qh[0:16]          | sc[0:4] as uint16   |
    group k of sub-block ib: grid index qs[2ib + k] | ((qh[ib] >> 4k) & 7) << 8,
        delta sign of group k in qh[ib] bit 3 + 4k
    sc[ib/4] bits 3(ib%4)..+2: scale code l of sub-block ib; the float16 super-block scale d
        is split in 4 nibbles: sc[j] bits 12..15 hold d's bits 4j..4j+3

The sort and its ties. The comparator sees values only, so the order of equal values (zeros,
repeated values, ``-0.0`` vs ``0.0``) is the C library's. glibc's ``qsort`` is a merge sort
whenever its temporary buffer fits (below 1024 bytes it is on the stack; here 256 or 128 bytes),
taking the left element on ties: a *stable* sort, which is what llama.cpp does on Linux (its
libggml-base calls the system glibc; checked against glibc 2.36 here, and glibc 2.37-2.39+ kept
the merge sort). This module sorts with NumPy's stable argsort, so equal values stay in index
order. Ties change the bytes: the prefix sums run in that order (other rounding) and a split
between equal values assigns them to different levels. macOS's libc ``qsort`` (Apple Libc, the
FreeBSD Bentley-McIlroy quicksort: insertion sort only up to 7 elements, a three-way partition
above) is not stable for 16 or 32 elements (it moves the pivot and every value equal to it), so
llama.cpp built on macOS can write other bytes for blocks with tied values; blocks without ties
are unaffected. tests/test_codecs_iq1.py emulates Apple's qsort. With its order this reference
differs from Linux llama.cpp a lot for IQ1_M: equal values in the two 8-weight halves can get
different levels (each half has its own value set), so the tie order decides which of them fall
below a split; SmolLM2 weights dequantized from Q4_1 (16 levels per 32 weights, ties everywhere)
change in 10-80% of their blocks. IQ1_S is far less exposed (equal values share one value set,
so only the rounding of the prefix sums moves; constant rows with an imatrix still change).
Continuous weights (no ties) give the same bytes on both systems.

Exactness notes. Sums run element by element in float32 in ggml's order; the split search scans
its candidates in C's order with C's comparison (``sumqx^2 > best * sumq2``), vectorized over
sub-blocks. The neighbour search keeps the first candidate with the smallest weighted distance
below ``FLT_MAX``. When none is (distances overflow on huge inputs) ggml falls back to a scan that
reads past the block (``xval[i]`` with a grid index ``i``): undefined, so those inputs raise
:class:`~mlxquant.errors.QuantInputError`, as does a NaN scale (``GGML_ASSERT(scale >= 0)``).
"""

from __future__ import annotations

import numpy as np

from ...errors import QuantInputError
from ..buffers import output
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
from ..grids_iq2 import Iq2Search, search_state
from .numeric import f16_field, field, fp16_bytes, ieee, nearest_int_c, seq_sum

_F32 = np.float32
_FLT_MAX = np.finfo(_F32).max
_SHIFTS = (2 * np.arange(8)).astype(np.int64)
_STEP = 64  # super-blocks per batch: bounds the (candidates, sub-blocks) temporaries


def _aborts(qtype: str, what: str) -> QuantInputError:
    return QuantInputError(
        f"{qtype}: values too large for this type: ggml's quantizer {what}; "
        "scale the tensor down or pick another type"
    )


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The splits ``0 <= i1 <= i2 <= n`` in C's loop order (i1 outer)."""
    i1, i2 = np.triu_indices(n + 1)
    return i1, i2


def _prefix(v: np.ndarray) -> np.ndarray:
    """(m, n) -> (m, n + 1): ``s[0] = 0; s[j+1] = s[j] + v[j]`` in float32."""
    z = np.zeros((v.shape[0], v.shape[1] + 1), _F32)
    z[:, 1:] = v
    return np.add.accumulate(z, axis=1)


def _scan(qx: np.ndarray, q2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C's running best over candidates: (t, m) sums -> (m,) scale and chosen candidate (-1: none).

    ``if (sumq2 > 0 && sumqx*sumqx > best*sumq2) { scale = sumqx/sumq2; best = scale*sumqx; }``
    from ``best = -FLT_MAX``, one candidate after the other, vectorized over sub-blocks.
    """
    ratio = qx / q2
    m = qx.shape[1]
    best = np.full(m, -_FLT_MAX, _F32)
    scale = np.zeros(m, _F32)
    pick = np.full(m, -1, np.int64)
    for t in range(qx.shape[0]):
        better = (q2[t] > 0) & (qx[t] * qx[t] > best * q2[t])
        if better.any():
            scale = np.where(better, ratio[t], scale)
            best = np.where(better, ratio[t] * qx[t], best)
            pick[better] = t
    return scale, pick


def _levels(order: np.ndarray, i1: np.ndarray, i2: np.ndarray) -> np.ndarray:
    """Sorted order (m, n) and splits (m,) -> (m, n) levels: 0 below i1, 1 below i2, else 2."""
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None], axis=1)
    return (rank >= i1[:, None]).astype(np.int64) + (rank >= i2[:, None])


def _codes(levels: np.ndarray) -> np.ndarray:
    """(..., 8) levels -> (...,) index ``OR_k levels[k] << 2k`` into ggml's kmap."""
    return np.bitwise_or.reduce(levels.astype(np.int64) << _SHIFTS, axis=-1)


def _best_neighbours(st: Iq2Search, u: np.ndarray, xv: np.ndarray, wv: np.ndarray,
                     scale: np.ndarray, xx: np.ndarray, qtype: str) -> np.ndarray:
    """``iq1_find_best_neighbour2`` for q off-grid groups: grid indices (q,).

    ``u`` (q,) kmap indices off the grid; ``xv``, ``wv`` (q, 8) values and weights; ``scale``
    (q,); ``xx`` (q, 3) the value set. ``d2 += w*diff*diff`` over the 8 positions in order, the
    first smallest ``d2 < FLT_MAX`` wins (C's strict ``<``).
    """
    start = (-st.kmap[u] - 1).astype(np.int64)
    cnt = st.neighbours[start].astype(np.int64)
    j = np.arange(int(cnt.max()))
    valid = j[None] < cnt[:, None]
    cand = st.neighbours[np.where(valid, start[:, None] + 1 + j, start[:, None])].astype(np.int64)
    lev = IQ1_LEVELS[cand]                                     # (q, c, 8)
    d2 = np.zeros(cand.shape, _F32)
    for i in range(8):
        qv = np.take_along_axis(xx, lev[:, :, i], axis=1)      # (q, c)
        diff = scale[:, None] * qv - xv[:, i : i + 1]
        d2 = d2 + wv[:, i : i + 1] * diff * diff
    d2[~valid | ~(d2 < _FLT_MAX)] = np.inf
    k = np.argmin(d2, axis=1)
    if not (d2[np.arange(len(k)), k] < np.inf).all():
        raise _aborts(qtype, "finds no grid neighbour at a finite distance and then reads past "
                      "the block (undefined result)")
    return cand[np.arange(len(k)), k]


def _grid_indices(st: Iq2Search, lv: np.ndarray, xb: np.ndarray, w: np.ndarray,
                  scale: np.ndarray, sel: np.ndarray, qtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Levels (m, n) of sub-blocks with value sets ``sel`` (m, n/8) (0: X_P, 1: X_M) -> grid
    indices (m, n/8) and whether each sub-block had a group off the grid (m,)."""
    m, n = lv.shape
    g = n // 8
    gi = st.kmap[_codes(lv.reshape(m, g, 8))].astype(np.int64)   # (m, g)
    off = gi < 0
    if off.any():
        r, k = np.nonzero(off)
        xv = xb.reshape(m, g, 8)[r, k]
        wv = w.reshape(m, g, 8)[r, k]
        u = _codes(lv.reshape(m, g, 8)[r, k])
        gi[r, k] = _best_neighbours(st, u, xv, wv, scale[r], X_PM[sel[r, k]], qtype)
    return gi, off.any(axis=1)


def _fit_terms(gi: np.ndarray, xb: np.ndarray, w: np.ndarray, sel: np.ndarray,
               factor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-weight terms ``w*q*x`` and ``w*q*q`` (m, n) of a least-squares fit on the grid points
    ``gi`` (m, n/8), ``q`` the value of each weight's level (times ``factor`` (m,) if given)."""
    m, n = xb.shape
    lev = IQ1_LEVELS[gi].reshape(m, n)                         # (m, n) levels 0..2
    q = X_PM[np.repeat(sel, 8, axis=1), lev]                   # (m, n) float32
    if factor is not None:
        q = q * factor[:, None]
    wq = w * q
    return wq * xb, wq * q


def _weights(x: np.ndarray, qw: np.ndarray | None, n_sub: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 256) super-blocks -> (n * n_sub, 256/n_sub) values and weights: ``qw*sqrt(sigma2 + x*x)``
    with ``sigma2 = 2*sum(x*x)/256``, or ``x*x`` without an imatrix."""
    n = x.shape[0]
    xb = x.reshape(n * n_sub, -1)
    if qw is None:
        return xb, xb * xb
    sigma2 = (_F32(2) * seq_sum(x * x, axis=-1)) / _F32(256)
    s = np.repeat(sigma2, n_sub)[:, None] + xb * xb
    return xb, qw.reshape(xb.shape) * np.sqrt(s)


def sort_order(xb: np.ndarray) -> np.ndarray:
    """ggml's ``qsort(pairs, n, 8, iq1_sort_helper)`` as glibc runs it: (m, n) values -> (m, n)
    indices in ascending value order, ties (``-0.0 == 0.0`` included) in index order."""
    return np.argsort(xb, axis=1, kind="stable")


def _split_search_s(xb: np.ndarray, w: np.ndarray, order: np.ndarray):
    """IQ1_S's exhaustive split search: (scale, pick) with pick = 2*pair + (0: X_P, 1: X_M)."""
    sx = _prefix(np.take_along_axis(w * xb, order, axis=1))    # (m, 33)
    sw = _prefix(np.take_along_axis(w, order, axis=1))
    i1, i2 = _pairs(xb.shape[1])
    n = xb.shape[1]
    a, b, c = sx[:, i1] - sx[:, :1], sx[:, i2] - sx[:, i1], sx[:, n : n + 1] - sx[:, i2]
    wa, wb, wc = sw[:, i1] - sw[:, :1], sw[:, i2] - sw[:, i1], sw[:, n : n + 1] - sw[:, i2]
    qx = np.empty((len(i1), 2, xb.shape[0]), _F32)            # (pairs, sign, m): C's order
    q2 = np.empty_like(qx)
    for s, v in enumerate(X_PM):
        qx[:, s] = ((a * v[0] + b * v[1]) + c * v[2]).T
        q2[:, s] = ((wa * v[0] * v[0] + wb * v[1] * v[1]) + wc * v[2] * v[2]).T
    return _scan(qx.reshape(-1, xb.shape[0]), q2.reshape(-1, xb.shape[0]))


def _split_search_m(xb: np.ndarray, w: np.ndarray, order: np.ndarray):
    """IQ1_M's split search with prefix sums per 8-weight half: (scale, pick) with
    pick = 4*pair + k, k = 2*(first half X_M) + (second half X_M)."""
    n = xb.shape[1]
    wx = np.take_along_axis(w * xb, order, axis=1)
    ws = np.take_along_axis(w, order, axis=1)
    half = order >= n // 2
    px = [_prefix(np.where(half == h, wx, _F32(0))) for h in (0, 1)]   # (m, 17) each
    pw = [_prefix(np.where(half == h, ws, _F32(0))) for h in (0, 1)]
    p, mm = X_PM[0], X_PM[1]
    cp1, cp2 = p[0] * p[0] - p[1] * p[1], p[1] * p[1] - p[2] * p[2]
    cm1, cm2 = mm[0] * mm[0] - mm[1] * mm[1], mm[1] * mm[1] - mm[2] * mm[2]
    i1, i2 = _pairs(n)
    qxp, qxm, q2p, q2m = [], [], [], []
    for h in (0, 1):
        tx, tw = px[h][:, n : n + 1], pw[h][:, n : n + 1]
        sx = px[h][:, i1] + px[h][:, i2]
        qxp.append(tx * p[2] - sx)
        qxm.append(tx * mm[2] - sx)
        q2p.append((tw * p[2] * p[2] + pw[h][:, i1] * cp1) + pw[h][:, i2] * cp2)
        q2m.append((tw * mm[2] * mm[2] + pw[h][:, i1] * cm1) + pw[h][:, i2] * cm2)
    qx = np.stack([qxp[0] + qxp[1], qxp[0] + qxm[1], qxm[0] + qxp[1], qxm[0] + qxm[1]], axis=1)
    q2 = np.stack([q2p[0] + q2p[1], q2p[0] + q2m[1], q2m[0] + q2p[1], q2m[0] + q2m[1]], axis=1)
    m = xb.shape[0]
    return _scan(qx.transpose(2, 1, 0).reshape(-1, m), q2.transpose(2, 1, 0).reshape(-1, m))


def _sub_blocks(xb: np.ndarray, w: np.ndarray, eps: np.float32, imatrix_s: bool, qtype: str):
    """Everything ``quantize_row_iq1_*_impl`` does per sub-block.

    Returns grid indices (m, n/8), scales (m,), value set per group (m, n/8; 0: X_P, 1: X_M)
    and the sign code (m,) (IQ1_S: 0/1 for +/-; IQ1_M: k in 0..3). A skipped sub-block (max |x|
    below ``eps`` or no usable split) has scale 0, index 0 and sign 0, as ggml leaves it.
    """
    m, n = xb.shape
    order = sort_order(xb)
    scale, pick = (_split_search_s if imatrix_s else _split_search_m)(xb, w, order)
    skip = (np.abs(xb).max(axis=1) < eps) | (pick < 0)
    per = 2 if imatrix_s else 4
    gi = np.zeros((m, n // 8), np.int64)
    sel = np.zeros((m, n // 8), np.int64)
    sign = np.zeros(m, np.int64)
    live = np.flatnonzero(~skip)
    if live.size == 0:
        return gi, np.zeros(m, _F32), sel, sign
    i1, i2 = _pairs(n)
    pair, sg = pick[live] // per, pick[live] % per
    lv = _levels(order[live], i1[pair], i2[pair])
    sc = scale[live]
    neg = sc < 0
    lv[neg] = 2 - lv[neg]
    sc = np.abs(sc)
    sg = np.where(neg, per - 1 - sg, sg)                      # +/- swapped: 0<->1; 0<->3, 1<->2
    sl = np.repeat(sg[:, None], n // 8, axis=1) if imatrix_s else np.stack([sg >> 1, sg & 1], 1)
    xl, wl = xb[live], w[live]
    g, refit = _grid_indices(search_state(qtype), lv, xl, wl, sc, sl, qtype)
    if refit.any():
        tx, t2 = _fit_terms(g[refit], xl[refit], wl[refit], sl[refit])
        sqx, sq2 = seq_sum(tx, axis=-1), seq_sum(t2, axis=-1)
        ok = (sqx > 0) & (sq2 > 0)
        sc[np.flatnonzero(refit)[ok]] = (sqx / sq2)[ok]
    if np.isnan(sc).any():
        raise _aborts(qtype, "aborts here (a NaN sub-block scale, GGML_ASSERT(scale >= 0))")
    out_scale = np.zeros(m, _F32)
    out_scale[live] = sc
    gi[live], sel[live], sign[live] = g, sl, sg
    return gi, out_scale, sel, sign


def _max_scale(scales: np.ndarray) -> np.ndarray:
    """``max_scale = MAX(max_scale, scale)`` from 0 over the sub-blocks (non-negative, no NaN)."""
    return np.maximum(scales.max(axis=1), _F32(0))


def _scale_codes(scales: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``nearest_int(0.5f*(id*scale - 1))`` clamped to 0..7, ``id = 1/d`` (n, k) int64."""
    inv = _F32(1) / d
    return np.clip(nearest_int_c(_F32(0.5) * (inv[:, None] * scales - _F32(1))), 0, 7).astype(np.int64)


@ieee
def _encode_s(x: np.ndarray, qw: np.ndarray) -> np.ndarray:
    """(n, 256) float32 super-blocks and their imatrix rows -> (n, 50) uint8."""
    n = x.shape[0]
    xb, w = _weights(x, qw, 8)
    gi, scale, _, sign = _sub_blocks(xb, w, GROUP_MAX_EPS_IQ1_S, True, "IQ1_S")
    gi = gi.reshape(n, 8, 4)
    scales = scale.reshape(n, 8)
    qh = np.bitwise_or.reduce((gi >> 8) << (3 * np.arange(4)), axis=2)   # (n, 8)
    max_scale = _max_scale(scales)
    live = max_scale != 0
    d = np.where(live, max_scale / _F32(15), _F32(1))
    ls = _scale_codes(scales, d) | (sign.reshape(n, 8) << 3)
    qh |= np.where(live[:, None], ls << 12, 0)
    out = np.empty((n, 50), np.uint8)
    out[:, 0:2] = fp16_bytes(np.where(live, d * IQ1S_D_FUDGE, _F32(0)))
    out[:, 2:34] = (gi & 255).reshape(n, 32)
    out[:, 34:50] = qh.astype("<u2").view(np.uint8).reshape(n, 16)
    return out


@ieee
def _encode_m(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """(n, 256) float32 super-blocks and imatrix rows (or None) -> (n, 56) uint8."""
    n = x.shape[0]
    xb, w = _weights(x, qw, 16)
    gi, scale, sel, _ = _sub_blocks(xb, w, GROUP_MAX_EPS_IQ1_M, False, "IQ1_M")
    scales = scale.reshape(n, 16)
    max_scale = _max_scale(scales)
    live = max_scale != 0
    d = np.where(live, max_scale / _F32(15), _F32(1))
    ls = _scale_codes(scales, d)                               # (n, 16)
    # the final fit of d over the whole super-block, sub-block by sub-block, in C's order
    fac = (2 * ls + 1).astype(_F32).reshape(-1)
    qx_t, q2_t = _fit_terms(gi, xb, w, sel, fac)
    sqx = seq_sum(qx_t.reshape(n, 256), axis=-1)
    sq2 = seq_sum(q2_t.reshape(n, 256), axis=-1)
    d = np.where(sq2 > 0, sqx / sq2, d)
    dh = fp16_bytes(d * IQ1M_D_FUDGE).view("<u2").reshape(n).astype(np.int64)
    dh = np.where(live, dh, 0)
    gi = gi.reshape(n, 16, 2)
    qh = (gi[:, :, 0] >> 8) | ((gi[:, :, 1] >> 8) << 4)
    signs = (sel.reshape(n, 16, 2) * np.array([0x08, 0x80])).sum(axis=2)
    qh |= np.where(live[:, None], signs, 0)
    sc = (ls.reshape(n, 4, 4) << (3 * np.arange(4))).sum(axis=2)   # (n, 4)
    sc |= ((dh[:, None] >> (4 * np.arange(4))) & 0xF) << 12
    sc = np.where(live[:, None], sc, 0)          # all scales 0: ggml writes no scale or sign bits
    out = np.empty((n, 56), np.uint8)
    out[:, 0:32] = (gi & 255).reshape(n, 32)
    out[:, 32:48] = qh
    out[:, 48:56] = sc.astype("<u2").view(np.uint8).reshape(n, 8)
    return out


class _IQ1(Codec):
    """Shared driver: blocks are independent; IQ1_S needs an imatrix (the API checks it)."""

    @staticmethod
    def _encode(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def _run(cls, xb: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        out = output((len(xb), cls.qtype.type_size), np.uint8)
        for b in range(0, len(xb), _STEP):
            e = min(b + _STEP, len(xb))
            out[b:e] = cls._encode(xb[b:e], None if qw is None else qw[np.arange(b, e) % len(qw)])
        return out

    @classmethod
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        rows, cols = x.shape
        out = cls._run(x.reshape(-1, 256), imatrix.reshape(cols // 256, 256))
        return out.reshape(rows, cls.qtype.row_bytes(cols))


class IQ1_S(_IQ1, qtype="IQ1_S"):
    _encode = staticmethod(_encode_s)

    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        raise QuantInputError("IQ1_S: this type needs an importance matrix (imatrix); ggml "
                              "aborts without one")

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        n = len(blocks)
        d = f16_field(blocks, 0)                               # (n,)
        qs = field(blocks, 2, 34).astype(np.int64).reshape(n, 8, 4)
        qh = field(blocks, 34, 50).view("<u2").astype(np.int64)   # (n, 8)
        idx = qs | (((qh[:, :, None] >> (3 * np.arange(4))) & 7) << 8)
        delta = np.where(qh & 0x8000, -IQ1S_DELTA, IQ1S_DELTA)      # (n, 8)
        with np.errstate(all="ignore"):
            dl = d[:, None] * (2 * ((qh >> 12) & 7) + 1).astype(_F32)
            v = IQ1S_GRID[idx].astype(_F32) + delta[:, :, None, None]   # (n, 8, 4, 8)
            res = output((n, 256), _F32)
            np.multiply(dl[:, :, None, None], v, out=res.reshape(n, 8, 4, 8))
        return res


class IQ1_M(_IQ1, qtype="IQ1_M"):
    _encode = staticmethod(_encode_m)

    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        return cls._run(x, None)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        n = len(blocks)
        qs = field(blocks, 0, 32).astype(np.int64).reshape(n, 16, 2)
        qh = field(blocks, 32, 48).astype(np.int64)            # (n, 16)
        sc = field(blocks, 48, 56).view("<u2").astype(np.int64)   # (n, 4)
        dh = (sc >> 12) << (4 * np.arange(4))
        d = np.bitwise_or.reduce(dh, axis=1).astype(np.uint16).view(np.float16).astype(_F32)
        ls = (sc[:, :, None] >> (3 * np.arange(4))) & 7         # (n, 4, 4) -> sub-block 4j+i
        idx = qs | (((qh[:, :, None] >> (4 * np.arange(2))) & 7) << 8)   # (n, 16, 2)
        neg = (qh[:, :, None] >> (3 + 4 * np.arange(2))) & 1
        delta = np.where(neg == 1, -IQ1S_DELTA, IQ1S_DELTA)      # (n, 16, 2)
        with np.errstate(all="ignore"):
            dl = d[:, None] * (2 * ls.reshape(n, 16) + 1).astype(_F32)
            v = IQ1S_GRID[idx].astype(_F32) + delta[..., None]   # (n, 16, 2, 8)
            res = output((n, 256), _F32)
            np.multiply(dl[:, :, None, None], v, out=res.reshape(n, 16, 2, 8))
        return res
