"""2-bit grid types: IQ2_XXS (2.0625 bpw) and IQ2_XS (2.3125 bpw), 256 weights per block.

Follows ggml-quants.c: ``quantize_row_iq2_xxs_impl``, ``quantize_row_iq2_xs_impl`` (both need an
importance matrix), ``iq2_find_best_neighbour``, ``dequantize_row_iq2_xxs`` and
``dequantize_row_iq2_xs``; the grids and the search state are :mod:`..grids_iq2`.

Each group of 8 weights is an index into a grid of 8-vectors of magnitudes (levels ``l`` in
0..2, searched as ``2l + 1``, decoded as ``(8, 25, 43)[l]``) plus 7 sign bits, the 8th sign
being the parity (ggml flips the least important weight when a group has an odd number of
negatives). A sub-block scale search tries 13 (IQ2_XXS, around a ``make_qp_quants`` start) or 19
(IQ2_XS) inverse scales; a group whose rounded levels are off the grid takes the best of its
precomputed neighbours, weighted by ``sqrt(weight)``. Sub-block scales end as 4-bit codes
``ls`` of ``d = max_scale / 31``, decoded as ``d * (0.5 + ls) / 4``.

IQ2_XXS block (66 bytes; 8 sub-blocks of 32 = 4 groups of 8)::

    byte  0  1   2 ............................................ 65
          | d:f16 | q2[0:16] as uint32: per sub-block ib two words  |
    q2[2ib]   : grid index of group k in bits 8k..8k+7            (k < 4, 256-entry grid)
    q2[2ib+1] : signs of group k in bits 7k..7k+6, scale code ls in bits 28..31

IQ2_XS block (74 bytes; 16 sub-blocks of 16 = 2 groups of 8)::

    byte  0  1   2 ......................... 65  66 ........ 73
          | d:f16 | qs[0:32] as uint16          | scales[0:8]   |
    qs[2ib+k] : grid index (9 bits, 512-entry grid) | signs << 9
    scales[j] : ls of sub-block 2j in the low nibble, 2j+1 in the high one

Exactness notes. Every sum runs position by position in float32 (:func:`~.numeric.seq_sum`),
``nearest_int`` is the bit trick (:func:`~.numeric.nearest_int_c`), ``MAX`` keeps C's order.
The neighbour search keeps the first candidate with the smallest weighted distance among those
below ``FLT_MAX``; when none is (distances overflow to inf or NaN on huge inputs) ggml aborts
(``GGML_ASSERT(grid_index >= 0)``), and so does a NaN sub-block scale (``GGML_ASSERT(scale >= 0)``):
those inputs raise :class:`~mlxquant.errors.QuantInputError` here.
"""

from __future__ import annotations

import functools

import numpy as np

from ...errors import QuantInputError
from ..buffers import output
from ..codec import Codec
from ..grids_iq2 import IQ2XS_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS, Iq2Search, code_levels, search_state
from .iq3 import encode_in_steps
from .numeric import GROUP_MAX_EPS, f16_field, field, fp16_bytes, ieee, nearest_int_c, seq_sum
from .search_scale_min import make_qp_quants

_F32 = np.float32
_FLT_MAX = np.finfo(_F32).max
_SHIFTS = (2 * np.arange(8)).astype(np.int64)
_STEP = 256  # blocks per batch: bounds the (batch, trials) temporaries


def _codes(levels: np.ndarray) -> np.ndarray:
    """(m, 8) levels -> (m,) uint16 grid code ``OR_i levels[i] << 2i`` (C's uint16 ``u``)."""
    return np.bitwise_or.reduce(levels.astype(np.int64) << _SHIFTS, axis=-1) & 0xFFFF


def _aborts(qtype: str, what: str) -> QuantInputError:
    return QuantInputError(
        f"{qtype}: values too large for this type: ggml's quantizer aborts here ({what}); "
        "scale the tensor down or pick another type"
    )


@functools.cache
def _grid_t(qtype: str) -> np.ndarray:
    """The quantizer grid position-major, (8, G) float32."""
    return np.ascontiguousarray(search_state(qtype).grid.T, dtype=_F32)


def _best_neighbours(st: Iq2Search, u: np.ndarray, xv: np.ndarray, wa: np.ndarray,
                     scale: np.ndarray, qtype: str) -> np.ndarray:
    """``iq2_find_best_neighbour`` for m off-grid groups at once: grid indices (m,).

    ``u`` (m,) codes off the grid, ``xv``/``wa`` (m, 8) values and ``sqrt(weight)``, ``scale`` (m,).
    The candidate lists are laid end to end, distances accumulate over the 8 positions in order,
    and each list keeps its first minimum (C's strict ``<``).
    """
    start = (-st.kmap[u] - 1).astype(np.int64)                 # (m,) offsets of the lists
    cnt = st.neighbours[start].astype(np.int64)
    first = np.cumsum(cnt) - cnt                               # (m,) list starts, end to end
    seg = np.repeat(np.arange(len(u)), cnt)                    # (P,) owner of each candidate
    cand = st.neighbours[np.repeat(start + 1 - first, cnt) + np.arange(int(cnt.sum()))]
    gt = _grid_t(qtype)
    xt, wt = np.ascontiguousarray(xv.T), np.ascontiguousarray(wa.T)   # (8, m)
    sc = np.repeat(scale, cnt)
    d2 = np.zeros(len(cand), _F32)
    for i in range(8):                                         # position by position, as in C
        diff = sc * gt[i].take(cand) - np.repeat(xt[i], cnt)
        d2 += np.repeat(wt[i], cnt) * diff * diff
    d2[~(d2 < _FLT_MAX)] = np.inf                               # never beats best_d2 = FLT_MAX
    low = np.minimum.reduceat(d2, first)
    if not (low < np.inf).all():
        raise _aborts(qtype, "no neighbour at a finite distance")
    pos = np.where(d2 == low[seg], np.arange(len(cand)), len(cand))
    return cand[np.minimum.reduceat(pos, first)]


def _project(st: Iq2Search, lv: np.ndarray, xv: np.ndarray, wa: np.ndarray, scale: np.ndarray,
             qtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Groups' rounded levels (m, 8) -> (grid index (m,), on-grid (m,) bool): the level's own
    grid point, or the best neighbour at ``scale`` (m,)."""
    u = _codes(lv)
    gi = st.kmap[u].astype(np.int64)
    off = gi < 0
    if off.any():
        gi[off] = _best_neighbours(st, u[off], xv[off], wa[off], scale[off], qtype)
    return gi, ~off


def _round_levels(idv: np.ndarray, xv: np.ndarray) -> np.ndarray:
    """``MAX(0, MIN(2, nearest_int(0.5f*(id*x - 1))))`` with ``id`` (m, 1) and ``x`` (m, n)."""
    return np.clip(nearest_int_c(_F32(0.5) * (idv * xv - _F32(1))), 0, 2)


def _sums(w: np.ndarray, xv: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sumqx, sumq2 over the sub-block with ``q = 2L + 1``, in C's order."""
    q = (2 * L + 1).astype(_F32)
    return seq_sum(w * xv * q), seq_sum(w * q * q)


def _prepare(x: np.ndarray, qw: np.ndarray, sub: int) -> tuple[np.ndarray, ...]:
    """Per 256-block: weights, ``sqrt`` weights, |x| with the parity flip, sign bytes.

    x, qw (n, 256) -> weight, waux, xval (n*256/sub, sub) and signs (n*256/sub, sub/8) uint8.
    """
    sigma2 = seq_sum(x * x) / _F32(256)                        # (n,)
    weight = qw * np.sqrt(sigma2[:, None] + x * x)
    waux = np.sqrt(weight)
    xg, wg = x.reshape(-1, 8), weight.reshape(-1, 8)           # groups of 8
    neg = ~(xg >= 0)
    xval = np.where(neg, -xg, xg)
    s = np.bitwise_or.reduce(neg.astype(np.int64) << np.arange(8), axis=1)
    odd = (neg.sum(axis=1) % 2) == 1
    ax = wg * xg * xg
    imin = np.argmin(np.where(np.isnan(ax), np.inf, ax), axis=1)
    imin[np.isnan(ax[:, 0])] = 0                               # nothing is < a NaN first value
    rows = np.flatnonzero(odd)
    xval[rows, imin[rows]] = -xval[rows, imin[rows]]
    s[rows] ^= 1 << imin[rows]
    signs = (s & 127).astype(np.uint8)
    return (weight.reshape(-1, sub), waux.reshape(-1, sub), xval.reshape(-1, sub),
            signs.reshape(-1, sub // 8))


def _trial(st: Iq2Search, xv: np.ndarray, wa: np.ndarray, idv: np.ndarray, scale: np.ndarray,
           qtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Every group's levels at inverse scale ``idv`` (m,), each group projected on the grid
    (neighbours weighed at ``scale`` (m,)): levels (m, n) and on-grid flags (m, n/8)."""
    m, n = xv.shape
    lv = _round_levels(idv[:, None], xv).reshape(-1, 8)
    gi, on = _project(st, lv, xv.reshape(-1, 8), wa.reshape(-1, 8), np.repeat(scale, n // 8), qtype)
    return code_levels(st.codes[gi]).reshape(m, n).astype(np.int64), on.reshape(m, n // 8)


def _search_xxs(w, wa, xv, st) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """32-weight sub-blocks (max >= GROUP_MAX_EPS) -> (kept (m,), scale (k,), levels (k, 32))
    of the k sub-blocks ggml does not skip after ``make_qp_quants`` (``eff_max <= 0``)."""
    scale, Lqp = make_qp_quants(xv, 4, w)
    kept = ~(scale * _F32(3) <= 0)
    w, wa, xv, scale = w[kept], wa[kept], xv[kept], scale[kept]
    L = Lqp[kept].astype(np.int64)
    eff_max = scale * _F32(3)
    best = np.zeros(len(xv), _F32)
    for is_ in range(-6, 7):
        idv = (_F32(5) + _F32(is_) * _F32(0.1)) / eff_max
        Laux, _ = _trial(st, xv, wa, idv, _F32(1) / idv, "IQ2_XXS")
        sumqx, sumq2 = _sums(w, xv, Laux)
        take = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        scale = np.where(take, sumqx / sumq2, scale)
        best = np.where(take, scale * sumqx, best)
        L[take] = Laux[take]
    redo = scale > 0                                           # final levels at the best scale
    if redo.any():
        L[redo], _ = _trial(st, xv[redo], wa[redo], _F32(1) / scale[redo], scale[redo], "IQ2_XXS")
        sumqx, sumq2 = _sums(w[redo], xv[redo], L[redo])
        scale[redo] = np.where(sumq2 > 0, sumqx / sumq2, scale[redo])
    return kept, scale, L


def _search_xs(w, wa, xv, st) -> tuple[np.ndarray, np.ndarray]:
    """16-weight sub-blocks (max >= GROUP_MAX_EPS) -> (scale (m,), levels (m, 16))."""
    m = len(xv)
    mx = xv.max(axis=1)
    scale = mx / _F32(5)
    L = np.zeros((m, 16), np.int64)
    on = np.ones((m, 2), bool)
    best = np.zeros(m, _F32)
    for is_ in range(-9, 10):
        idv = (_F32(5) + _F32(is_) * _F32(0.1)) / mx
        Laux, on_aux = _trial(st, xv, wa, idv, _F32(1) / idv, "IQ2_XS")
        sumqx, sumq2 = _sums(w, xv, Laux)
        take = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        scale = np.where(take, sumqx / sumq2, scale)
        best = np.where(take, scale * sumqx, best)
        L[take] = Laux[take]
        on[take] = on_aux[take]
    redo = (~on).any(axis=1) & (scale > 0)                    # re-round only off-grid groups
    if redo.any():
        idv = _F32(1) / scale[redo]
        lv = _round_levels(idv[:, None], xv[redo]).reshape(-1, 8)
        fix = ~on[redo].reshape(-1)
        xg, wg = xv[redo].reshape(-1, 8), wa[redo].reshape(-1, 8)
        gi, _ = _project(st, lv[fix], xg[fix], wg[fix], np.repeat(scale[redo], 2)[fix], "IQ2_XS")
        Lr = L[redo].reshape(-1, 8)
        Lr[fix] = code_levels(st.codes[gi])
        L[redo] = Lr.reshape(-1, 16)
        sumqx, sumq2 = _sums(w[redo], xv[redo], L[redo])
        scale[redo] = np.where(sumq2 > 0, sumqx / sumq2, scale[redo])
    return scale, L


def _finish(scales: np.ndarray, qtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, nsub) sub-block scales (0 where skipped) -> (d bytes (n, 2), ls (n, nsub), zero (n,))."""
    if np.isnan(scales).any():
        raise _aborts(qtype, "a NaN sub-block scale")
    max_scale = scales.max(axis=1)                             # all >= 0: C's MAX scan agrees
    zero = max_scale == 0
    d = max_scale / _F32(31)
    dh = fp16_bytes(np.where(zero, _F32(0), d))
    idv = _F32(1) / d
    ls = np.clip(nearest_int_c(_F32(0.5) * (idv[:, None] * scales - _F32(1))), 0, 15)
    return dh, ls.astype(np.int64), zero


def _grid_index(st: Iq2Search, L: np.ndarray, qtype: str) -> np.ndarray:
    """(m, 8k) final levels -> (m, k) grid indices (ggml aborts on an off-grid point)."""
    u = _codes(L.reshape(-1, 8))
    gi = np.where(u < len(st.kmap), st.kmap[np.minimum(u, len(st.kmap) - 1)], -1)
    if (gi < 0).any():
        raise _aborts(qtype, "a point off the grid")
    return gi.reshape(len(L), L.shape[1] // 8)


@ieee
def _encode_xxs(x: np.ndarray, qw: np.ndarray) -> np.ndarray:
    n = len(x)
    st = search_state("IQ2_XXS")
    w, wa, xv, signs = _prepare(x, qw, 32)                     # (n*8, 32), signs (n*8, 4)
    act = ~(xv.max(axis=1) < GROUP_MAX_EPS)
    scales = np.zeros(n * 8, _F32)
    q2 = np.zeros((n * 8, 2), np.uint32)
    if act.any():
        kept, scale, L = _search_xxs(w[act], wa[act], xv[act], st)
        sg = signs[act][kept]
        flip = scale < 0
        scale[flip] = -scale[flip]
        sg[flip] = ~sg[flip] & 127
        gi = _grid_index(st, L, "IQ2_XXS")                     # (m, 4)
        sub = np.flatnonzero(act)[kept]
        k = np.arange(4)
        q2[sub, 0] = np.bitwise_or.reduce(gi << (8 * k), axis=1)
        q2[sub, 1] = np.bitwise_or.reduce(sg.astype(np.int64) << (7 * k), axis=1)
        scales[sub] = scale
    dh, ls, zero = _finish(scales.reshape(n, 8), "IQ2_XXS")
    q2 = q2.reshape(n, 8, 2)
    q2[:, :, 1] |= (ls << 28).astype(np.uint32)
    q2[zero] = 0
    out = np.empty((n, 66), np.uint8)
    out[:, :2] = dh
    out[:, 2:] = q2.astype("<u4").view(np.uint8).reshape(n, 64)
    return out


@ieee
def _encode_xs(x: np.ndarray, qw: np.ndarray) -> np.ndarray:
    n = len(x)
    st = search_state("IQ2_XS")
    w, wa, xv, signs = _prepare(x, qw, 16)                     # (n*16, 16), signs (n*16, 2)
    act = ~(xv.max(axis=1) < GROUP_MAX_EPS)
    scales = np.zeros(n * 16, _F32)
    q2 = np.zeros((n * 16, 2), np.int64)
    if act.any():
        scale, L = _search_xs(w[act], wa[act], xv[act], st)
        sg = signs[act]
        flip = scale < 0
        scale[flip] = -scale[flip]
        sg[flip] = ~sg[flip] & 127
        q2[act] = _grid_index(st, L, "IQ2_XS") | (sg.astype(np.int64) << 9)
        scales[act] = scale
    dh, ls, zero = _finish(scales.reshape(n, 16), "IQ2_XS")
    q2 = q2.reshape(n, 32)
    q2[zero] = 0
    out = np.empty((n, 74), np.uint8)
    out[:, :2] = dh
    out[:, 2:66] = q2.astype("<u2").view(np.uint8).reshape(n, 64)
    out[:, 66:] = ls[:, 0::2] | (ls[:, 1::2] << 4)
    return out


@ieee
def _signed(grid: np.ndarray, idx: np.ndarray, sign7: np.ndarray, db: np.ndarray) -> np.ndarray:
    """(n, g) grid indices and 7-bit sign codes, (n, g) scales -> (n, g, 8) ``db*grid*(+-1)``.

    ggml's ``* -1.f`` flips the sign bit even of a NaN (a NaN scale read from the bytes), as an
    XOR does; NumPy's multiply by -1 would keep the NaN's sign.
    """
    s = KSIGNS_IQ2XS[sign7].astype(np.uint32)
    neg = (s[..., None] >> np.arange(8, dtype=np.uint32)) & 1   # (n, g, 8)
    y = db[..., None] * grid[idx].astype(_F32)
    y.view(np.uint32)[...] ^= neg << 31
    return y


class _IQ2(Codec):
    """Shared driver: the imatrix is required (the API checks); blocks are independent."""

    _encode = staticmethod(_encode_xxs)

    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        raise QuantInputError(f"{cls.qtype.name}: this type needs an importance matrix (imatrix)")

    @classmethod
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        return encode_in_steps(cls._encode, x, imatrix, cls.qtype.type_size, _STEP)


class IQ2_XXS(_IQ2, qtype="IQ2_XXS"):
    _encode = staticmethod(_encode_xxs)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        n = len(blocks)
        d = f16_field(blocks, 0)                               # (n,)
        q2 = field(blocks, 2, 66).view("<u4").reshape(n, 8, 2).astype(np.int64)
        idx = (q2[:, :, :1] >> (8 * np.arange(4))) & 0xFF      # (n, 8, 4)
        sign7 = (q2[:, :, 1:] >> (7 * np.arange(4))) & 127
        with np.errstate(all="ignore"):
            db = d[:, None] * (_F32(0.5) + (q2[:, :, 1] >> 28).astype(_F32)) * _F32(0.25)
        y = _signed(IQ2XXS_GRID, idx, sign7, np.repeat(db[:, :, None], 4, axis=2))
        res = output((n, 256), _F32)
        res[...] = y.reshape(n, 256)
        return res


class IQ2_XS(_IQ2, qtype="IQ2_XS"):
    _encode = staticmethod(_encode_xs)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        n = len(blocks)
        d = f16_field(blocks, 0)
        qs = field(blocks, 2, 66).view("<u2").reshape(n, 8, 4).astype(np.int64)
        sc = field(blocks, 66, 74).astype(np.int64)            # (n, 8)
        ls = np.stack([sc & 0xF, sc >> 4], axis=2)             # (n, 8, 2)
        with np.errstate(all="ignore"):
            db = d[:, None, None] * (_F32(0.5) + ls.astype(_F32)) * _F32(0.25)
        y = _signed(IQ2XS_GRID, qs & 511, qs >> 9, np.repeat(db, 2, axis=2))
        res = output((n, 256), _F32)
        res[...] = y.reshape(n, 256)
        return res
