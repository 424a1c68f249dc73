"""IQ3_XXS and IQ3_S on MLX arrays, and the grid search shared with IQ2_S (twin of
``mlxquant/quant/numpy/iq3.py``: same algorithm, same function names, same bytes as ggml's
``quantize_row_iq3_xxs_impl`` / ``quantize_row_iq3_s_impl`` and ``dequantize_row_iq3_xxs`` /
``dequantize_row_iq3_s``).

The algorithm and ggml's quirks are explained in the NumPy module; the blocks::

    IQ3_XXS (98 bytes)   | d:f16 | grid rows[64] | 8 x u32: 4 x 7 sign bits, scale l << 28 |
    IQ3_S  (110 bytes)   | d:f16 | rows lo[64] | qh[8] | signs[32] | scales[4] (nibbles)    |

(IQ3_S's rows and signs of an all-zero sub-block are not written: the following ones move down
one slot, as ggml's pointers do.) What differs from NumPy is how the search is laid out for MLX,
which has no boolean indexing and pays per operation:

- all trial scales run at once: levels, codes and sums are ``(trials, ..., sub-blocks)`` arrays,
  and only the choice of the best trial is a loop (C's order: a later trial wins only if
  strictly better);
- the off-grid groups of every trial go to :func:`best_neighbours` together: it sorts them by
  the length of their neighbour list (``argsort`` of a bucket key; one host sync reads the
  bucket sizes) and measures each bucket against a table slice of its width, so a short list
  does not pay for the longest one; the rows come back with a scatter to unique indices;
- sub-blocks ggml skips (max below its epsilon) run through the search on zeros (code 0 is on
  every grid, so they never reach the neighbour search) and are masked out after;
- where ggml aborts (no neighbour below FLT_MAX, a NaN scale) a flag accumulates lazily and the
  chunk raises :class:`~mlxquant.quant.numpy.iq3.GridSearchAbort` once it is evaluated.

Sums run position by position (``acc = acc + a[j]``, never ``mx.sum``); the first smallest
distance is found with ``min`` and :func:`~.numeric.first_index`, never ``argmin`` tie rules;
nothing is ``mx.compile``d, so no ``a*b + c`` can become an FMA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mlx.core as mx
import numpy as np

from ..codec import Codec
from ..grids_iq3 import IQ3S_GRID, IQ3XXS_GRID
from ..numpy import iq3 as _np
from ..numpy.iq3 import GridSearchAbort
from .codec import in_chunks
from .numeric import F32, first_index, fp16_bytes, fp16_from_bytes, nearest_int_c, seq_sum

FLT_MAX = float(np.finfo(np.float32).max)
_INF = float("inf")
KSIGNS = mx.array(_np.KSIGNS)
_GRID_XXS = mx.array(IQ3XXS_GRID.astype(np.float32))   # (256, 4)
_GRID_S = mx.array(IQ3S_GRID.astype(np.float32))       # (512, 4)
# Neighbour-list buckets of best_neighbours (one more bucket takes the full table width).
_WIDTHS = (2, 4, 8, 16, 32, 64, 128)

# Weights per evaluated chunk: the search holds (trials, 32, sub-blocks) arrays, ~30x the chunk.
CHUNK_WEIGHTS = 1 << 16


@dataclass(frozen=True)
class MxGridSearch:
    """:class:`~mlxquant.quant.numpy.iq3.GridSearch` with its tables as MLX arrays."""

    ref: _np.GridSearch
    kmap: mx.array      # (codes,) int32
    gridf: mx.array     # (points, group) float32 values 2l + 1
    table: mx.array     # (codes, nmax) int32 padded neighbour lists
    counts: mx.array    # (codes,) int32 list lengths
    trials: mx.array    # (T,) float32 ``2*kmaxq - 1 + is*step``, in C's float32 arithmetic


_SEARCHES: dict[str, MxGridSearch] = {}


def mx_search(gs: _np.GridSearch) -> MxGridSearch:
    """The MLX tables of a NumPy grid search (built once per type)."""
    if gs.qtype in _SEARCHES:
        return _SEARCHES[gs.qtype]
    f32 = np.float32
    top = f32(2 * gs.kmaxq - 1)
    nums = np.array([top + f32(t) * f32(gs.step) for t in range(-gs.ntry, gs.ntry + 1)], f32)
    g = MxGridSearch(gs, mx.array(gs.kmap), mx.array(gs.gridf), mx.array(gs.table),
                     mx.array(gs.counts), mx.array(nums))
    return _SEARCHES.setdefault(gs.qtype, g)


def best_neighbours(g: MxGridSearch, u: mx.array, need: mx.array, xg: mx.array, wg: mx.array,
                    src: mx.array, scale: mx.array,
                    values: Callable[[mx.array, mx.array], mx.array] | None = None
                    ) -> tuple[mx.array, mx.array]:
    """``iq{2,3}_find_best_neighbour`` for the groups flagged in ``need``.

    Args:
        u: (G,) int32 codes; need: (G,) bool, the groups to search (off the grid).
        xg, wg: (P, group) float32 |x| and distance weights of the distinct groups (sqrt of the
            search weights for the 2- and 3-bit types, the weights for IQ1); src: (G,) int32
            row of each group in them (trials share their groups' x).
        scale: (G,) float32 scale of each group.
        values: ``values(cand, idx)`` -> (k, width, group) float32 values of the candidate grid
            rows (k, width) of groups ``idx`` (k,); default ``gridf[cand]`` (IQ1 passes its
            value sets).

    Returns:
        (G,) int32 grid rows (``kmap[u]`` where not searched) and a bool scalar: some searched
        group found no distance below FLT_MAX (ggml aborts).
    """
    rows = mx.take(g.kmap, u)
    cnt = mx.where(need, mx.take(g.counts, u), 0)
    key = (cnt > 0).astype(mx.int32)
    for w in _WIDTHS:
        key = key + (cnt > w).astype(mx.int32)
    sizes = mx.stack([mx.sum(key == b) for b in range(len(_WIDTHS) + 2)]).tolist()
    bad = mx.array(False)
    if sum(sizes[1:]) == 0:
        return rows, bad
    order = mx.argsort(key).astype(mx.int32)
    nmax = g.table.shape[1]
    flat = g.table.reshape(-1)
    start = sizes[0]
    for b, size in enumerate(sizes[1:]):
        if size == 0:
            continue
        idx = order[start : start + size]
        start += size
        width = min(nmax, _WIDTHS[b]) if b < len(_WIDTHS) else nmax
        first = mx.take(u, idx)[:, None] * nmax                        # the lists, flat
        cand = mx.take(flat, first + mx.arange(width, dtype=mx.int32)[None])      # (k, width)
        q = mx.take(g.gridf, cand, axis=0) if values is None else values(cand, idx)
        # q: (k, width, group) values of the candidates
        p = mx.take(src, idx)
        x, w = mx.take(xg, p, axis=0), mx.take(wg, p, axis=0)       # (k, group)
        s = mx.take(scale, idx)[:, None]
        d2 = None
        for i in range(q.shape[2]):                                  # position by position
            diff = s * q[:, :, i] - x[:, i : i + 1]
            term = (w[:, i : i + 1] * diff) * diff
            d2 = term if d2 is None else d2 + term
        d2 = mx.where(d2 < FLT_MAX, d2, _INF)                         # C keeps d2 < FLT_MAX
        low = mx.min(d2, axis=1, keepdims=True)
        bad = bad | mx.any(low == _INF)
        k = first_index(d2 == low, axis=1)                           # first of equal distances
        rows[idx] = mx.take_along_axis(cand, k[:, None], axis=1)[:, 0]
    return rows, bad


def grid_codes(g: MxGridSearch, xa: mx.array, inv: mx.array) -> mx.array:
    """(S, a) |x| and (T, a) inverse scales -> (T, groups, a) int32 codes of the rounded levels."""
    gs = g.ref
    v = nearest_int_c(0.5 * (inv[:, None, :] * xa[None] - 1.0))      # (T, S, a)
    lv = mx.clip(v, 0, gs.kmaxq - 1).reshape(v.shape[0], gs.groups, gs.group, -1)
    u = lv[:, :, 0]
    for i in range(1, gs.group):
        u = u | (lv[:, :, i] << (gs.bits * i))
    return u


def by_group(g: MxGridSearch, a_s: mx.array) -> mx.array:
    """(S, a) position-major -> (groups * a, group): row k*a + c is group k of sub-block c."""
    gs = g.ref
    a = a_s.shape[1]
    return mx.contiguous(a_s.reshape(gs.groups, gs.group, a).transpose(0, 2, 1)).reshape(-1, gs.group)


def grid_sums(g: MxGridSearch, wx: mx.array, w: mx.array, gi: mx.array) -> tuple[mx.array, mx.array]:
    """sum w*x*q and sum w*q*q in C's order for (T, groups, a) rows: (T, a) each."""
    gs = g.ref
    t, _, a = gi.shape
    q = mx.take(g.gridf, gi, axis=0)                                  # (T, groups, a, group)
    q = q.transpose(1, 3, 0, 2).reshape(gs.groups * gs.group, t, a)   # (S, T, a)
    return seq_sum(wx[:, None] * q, axis=0), seq_sum((w[:, None] * q) * q, axis=0)


def grid_search(g: MxGridSearch, xa: mx.array, wa: mx.array, wsa: mx.array,
                mxv: mx.array) -> tuple[mx.array, mx.array, mx.array]:
    """The scale search: (S, a) xval, weights, sqrt weights and (a,) max -> (a,) scales (before
    the sign flip), (groups, a) grid rows, and the abort flag (bool scalar)."""
    gs = g.ref
    a = xa.shape[1]
    nt = g.trials.shape[0]
    wx = wa * xa
    xg, wg = by_group(g, xa), by_group(g, wsa)
    n_g = gs.groups * a

    inv = g.trials[:, None] / mxv[None]                               # (T, a)
    u = grid_codes(g, xa, inv)                                            # (T, groups, a)
    on_t = mx.take(g.kmap, u) >= 0
    sc_t = mx.broadcast_to((1.0 / inv)[:, None, :], u.shape).reshape(-1)
    src = mx.tile(mx.arange(n_g, dtype=mx.int32), nt)
    gi_t, bad = best_neighbours(g, u.reshape(-1), mx.logical_not(on_t).reshape(-1), xg, wg, src, sc_t)
    gi_t = gi_t.reshape(u.shape)
    sqx, sq2 = grid_sums(g, wx, wa, gi_t)                                 # (T, a)

    best = mx.zeros((a,), F32)
    scale = mxv / float(2 * gs.kmaxq - 1)
    rows = mx.full((gs.groups, a), int(gs.kmap[0]), mx.int32)
    on = mx.full((gs.groups, a), not gs.refit_all, mx.bool_)
    for t in range(nt):
        better = (sq2[t] > 0) & (sqx[t] * sqx[t] > best * sq2[t])
        ratio = sqx[t] / sq2[t]
        scale = mx.where(better, ratio, scale)
        best = mx.where(better, ratio * sqx[t], best)
        rows = mx.where(better[None], gi_t[t], rows)
        on = mx.where(better[None], on_t[t], on)

    redo = mx.any(mx.logical_not(on), axis=0) & (scale > 0)           # refit with that scale
    sc = mx.where(redo, scale, 1.0)
    sel = mx.ones(on.shape, mx.bool_) if gs.refit_all else mx.logical_not(on)
    sel = sel & redo[None]
    u = grid_codes(g, xa, (1.0 / sc)[None])[0]                            # (groups, a)
    need = sel & (mx.take(g.kmap, u) < 0)
    gi, bad2 = best_neighbours(g, u.reshape(-1), need.reshape(-1), xg, wg,
                               mx.arange(n_g, dtype=mx.int32),
                               mx.broadcast_to(sc[None], u.shape).reshape(-1))
    rows = mx.where(sel, gi.reshape(u.shape), rows)
    sqx, sq2 = grid_sums(g, wx, wa, rows[None])
    scale = mx.where(redo, mx.where(sq2[0] > 0, sqx[0] / sq2[0], sc), scale)
    bad = bad | bad2 | mx.any(rows < 0)
    return scale, rows, bad


def _encode(qtype: str, x: mx.array, qw: mx.array | None) -> tuple[mx.array, mx.array]:
    """(n, 256) float32 super-blocks and (n, 256) imatrix rows (or None) -> (n, 98 or 110)
    uint8 and the abort flag."""
    xxs = qtype == "IQ3_XXS"
    g = mx_search(_np.iq3_search(qtype))
    n = x.shape[0]
    m = 8 * n
    xt = mx.contiguous(x.reshape(m, 32).T)                            # (32, m): column 8*blk + ib
    if qw is None:
        wt = xt * xt
    else:
        xs = mx.contiguous(x.T)                                       # (256, n)
        sigma2 = mx.repeat((2.0 * seq_sum(xs * xs, axis=0)) / 256.0, 8)
        wt = mx.contiguous(qw.reshape(m, 32).T) * mx.sqrt(sigma2[None] + xt * xt)
    neg = mx.logical_not(xt >= 0)                                     # (32, m) sign bits
    xval = mx.where(neg, -xt, xt)
    pos8 = mx.arange(8, dtype=mx.int32)[None, :, None]
    signs = mx.sum(neg.reshape(4, 8, m).astype(mx.int32) << pos8, axis=1)   # (4, m)
    if xxs:                                                           # even number of minus signs
        v = ((wt * xt) * xt).reshape(4, 8, m)
        nan = mx.isnan(v)
        v = mx.where(nan, _INF, v)
        v = mx.where(nan & (pos8 == 0), -_INF, v)                    # C: a NaN first stays the min
        imin = first_index(v == mx.min(v, axis=1, keepdims=True), axis=1)   # (4, m)
        odd = (mx.sum(neg.reshape(4, 8, m).astype(mx.int32), axis=1) % 2) == 1
        flip = (odd[:, None] & (pos8 == imin[:, None])).reshape(32, m)
        xval = mx.where(flip, -xval, xval)
        signs = mx.where(odd, signs ^ mx.left_shift(1, imin), signs) & 127
    mxv = mx.max(xval, axis=0)
    active = mx.logical_not(mxv < float(_np.EPS_XXS)) if xxs else mxv != 0

    sc, gi, bad = grid_search(g, mx.where(active, xval, 0.0), mx.where(active, wt, 0.0),
                              mx.where(active, mx.sqrt(wt), 0.0), mx.where(active, mxv, 1.0))
    flip = active & (sc < 0)
    sc = mx.where(flip, -sc, sc)
    signs = mx.where(flip, signs ^ (127 if xxs else 255), signs)
    bad = bad | mx.any(active & mx.logical_not(sc >= 0))
    scales = mx.where(active, sc, 0.0).reshape(n, 8)
    rows = gi.reshape(8, n, 8).transpose(1, 2, 0)                    # (n, ib, k)
    signs = signs.reshape(4, n, 8).transpose(1, 2, 0)                 # (n, ib, k)
    act = active.reshape(n, 8)

    max_scale = mx.max(scales, axis=1)
    d = max_scale / 31.0
    inv = 1.0 / d
    ls = mx.clip(nearest_int_c(0.5 * (inv[:, None] * scales - 1.0)), 0, 15)    # (n, 8)
    zero = max_scale == 0
    dh = mx.where(zero, 0.0, d * (1.0125 if xxs else 1.033))
    if xxs:
        word = ls.astype(mx.uint32) << 28
        for k in range(4):
            word = word | (mx.where(act, signs[:, :, k], 0).astype(mx.uint32) << (7 * k))
        word = mx.where(zero[:, None], 0, word).astype(mx.uint32)
        qs = mx.where(act[:, :, None] & mx.logical_not(zero)[:, None, None], rows, 0)
        out = mx.concatenate([fp16_bytes(dh), qs.astype(mx.uint8).reshape(n, 64),
                              mx.contiguous(word).view(mx.uint8).reshape(n, 32)], axis=1)
        return out, bad
    # ggml's qs/signs pointers skip inactive sub-blocks: slot j holds the (j+1)-th active one
    count = mx.cumsum(act.astype(mx.int32), axis=1)                   # (n, 8)
    j = mx.arange(8, dtype=mx.int32)
    src = first_index(count[:, None, :] == (j[None, :, None] + 1), axis=2)   # (n, 8) slot -> ib
    has = j[None] < count[:, 7:8]
    src = mx.minimum(src, 7)
    qs = mx.take_along_axis(rows & 255, src[:, :, None], axis=1)      # (n, slot, k)
    qs = mx.where(has[:, :, None], qs, 0)
    sg = mx.where(has[:, :, None], mx.take_along_axis(signs, src[:, :, None], axis=1), 0)
    hi = mx.sum((rows >> 8) << j[None, None], axis=2)                 # (n, 8): qh[ib] bit k
    hi = mx.where(act, hi, 0)
    ls = mx.where(zero[:, None], 0, ls)
    out = mx.concatenate([fp16_bytes(dh), qs.astype(mx.uint8).reshape(n, 64),
                          hi.astype(mx.uint8), sg.astype(mx.uint8).reshape(n, 32),
                          (ls[:, 0::2] | (ls[:, 1::2] << 4)).astype(mx.uint8)], axis=1)
    return out, bad


def signed(db: mx.array, g: mx.array, neg: mx.array) -> mx.array:
    """(n, s) scales, (n, s, k) grid values and (n, s*k) sign bits -> (n, s*k) ``db * g`` with the
    sign bit flipped where ``neg`` (the compiled C's ``-1`` multiply: a NaN comes out negative)."""
    n = db.shape[0]
    y = (db[:, :, None] * g).reshape(n, -1)
    return (y.view(mx.uint32) ^ (neg.astype(mx.uint32) << 31)).view(F32)


def _bits8(b: mx.array) -> mx.array:
    """(...,) uint8 -> (..., 8) bit j of each byte."""
    return (b[..., None] >> mx.arange(8, dtype=mx.uint8)) & 1


def _decode_xxs(b: mx.array) -> mx.array:
    n = b.shape[0]
    d = fp16_from_bytes(b[:, 0:2])                                    # (n,)
    word = mx.contiguous(b[:, 66:98]).view(mx.uint32).reshape(n, 8)
    db = (d[:, None] * (0.5 + (word >> 28).astype(F32))) * 0.5
    g = mx.take(_GRID_XXS, b[:, 2:66].astype(mx.int32), axis=0).reshape(n, 8, 32)
    sb = mx.take(KSIGNS, ((word[:, :, None] >> (7 * mx.arange(4, dtype=mx.uint32))) & 127).astype(mx.int32))
    return signed(db, g, _bits8(sb).reshape(n, 256))


def _decode_s(b: mx.array) -> mx.array:
    n = b.shape[0]
    d = fp16_from_bytes(b[:, 0:2])
    sc = b[:, 106:110].astype(mx.int32)
    ib = mx.arange(8, dtype=mx.int32)
    nib = (sc[:, ib // 2] >> (4 * (ib % 2))) & 15                     # (n, 8)
    db = d[:, None] * (1 + 2 * nib).astype(F32)
    qh = b[:, 66:74].astype(mx.int32)
    rows = b[:, 2:66].astype(mx.int32).reshape(n, 8, 8) | (((qh[:, :, None] >> ib) & 1) << 8)
    g = mx.take(_GRID_S, rows, axis=0).reshape(n, 8, 32)
    return signed(db, g, _bits8(b[:, 74:106]).reshape(n, 256))


class _IQ3(Codec):
    """Shared driver: both ggml paths (with and without imatrix) run the same search."""

    @classmethod
    def _run(cls, x: mx.array, qw: mx.array | None) -> mx.array:
        out, bad = _encode(cls.qtype.name, x, qw)
        mx.eval(out, bad)
        if bad.item():
            raise GridSearchAbort(f"{cls.qtype.name}: ggml aborts on this input (no grid neighbour "
                                  "closer than FLT_MAX, or a NaN scale: the weights overflow float32)")
        return out

    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        x = x.astype(F32)
        return in_chunks(lambda b0, b1: cls._run(x[b0:b1], None), x.shape[0], 256, CHUNK_WEIGHTS)

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        return weighted_rows(cls._run, x, imatrix, cls.qtype.row_bytes(x.shape[1]), CHUNK_WEIGHTS)


def weighted_rows(run: Callable[[mx.array, mx.array], mx.array], x: mx.array, imatrix: mx.array,
                  row_bytes: int, chunk_weights: int) -> mx.array:
    """``run(blocks (k, 256), imatrix rows (k, 256))`` over row chunks -> (rows, row_bytes)."""
    rows, cols = x.shape
    per_row = cols // 256
    x = x.astype(F32)
    qw_row = imatrix.astype(F32).reshape(1, per_row, 256)

    def chunk(r0: int, r1: int) -> mx.array:
        qw = mx.broadcast_to(qw_row, (r1 - r0, per_row, 256)).reshape(-1, 256)
        return run(x[r0:r1].reshape(-1, 256), qw).reshape(r1 - r0, row_bytes)

    return in_chunks(chunk, rows, cols, chunk_weights)


class IQ3_XXS(_IQ3, qtype="IQ3_XXS", backend="mlx"):
    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        return _decode_xxs(blocks)


class IQ3_S(_IQ3, qtype="IQ3_S", backend="mlx"):
    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        return _decode_s(blocks)
