"""3-bit i-quants on a grid of 4-weight points: IQ3_XXS (256 points) and IQ3_S (512 points).

ggml-quants.c: ``quantize_row_iq3_xxs_impl`` (grid 256), ``quantize_row_iq3_s_impl`` (grid 512,
sub-blocks of 32), ``iq3_find_best_neighbour``, ``dequantize_row_iq3_xxs`` /
``dequantize_row_iq3_s``; the grids are :mod:`mlxquant.quant.grids_iq3`. ``ggml_quantize_chunk``
runs the same function with and without an importance matrix: weights ``x*x`` without one, else
``imatrix[j] * sqrt(sigma2 + x[j]**2)`` with ``sigma2 = 2/256 * sum x**2`` over the super-block.

Per 32-weight sub-block: signs are split off (``xval = |x|``; IQ3_XXS stores 7 sign bits per 8
weights and makes their count even by flipping the weight of least ``w*x*x``, whose ``xval`` then
turns negative). Then 31 (XXS) or 19 (S) trial scales ``(15 + 0.2*is)/max``: each group of 4 is
rounded to levels ``l = nearest_int((id*xval - 1)/2)`` in 0..7, and a code off the grid is replaced
by its best neighbour (least ``sum sqrt(w)*(s*q - xval)**2`` over the neighbour list). The trial of
best weighted least-squares fit wins; groups that were off the grid are re-rounded once with its
scale (IQ3_S re-rounds all groups), and the scale is refitted. The sub-block scales are stored as
4-bit ``l`` with ``scale ~ d*(2l + 1)``, ``d`` stored with a fudge factor (1.0125 / 1.033).

IQ3_XXS block (98 bytes, 256 weights = 8 sub-blocks of 32)::

    byte  0  1   2 .............. 65   66 ..................... 97
          | d:f16 | grid rows[64]      | 8 x u32: signs and scale  |
    u32 of sub-block ib: bits 7k..7k+6 = signs of weights 8k..8k+6 (bit 7 = parity), 28..31 = l
    weight = d * (0.5 + l) * 0.5 * iq3xxs_grid[row][i] * sign

IQ3_S block (110 bytes)::

    byte  0  1   2 ........ 65   66 .. 73   74 ........ 105   106 .. 109
          | d:f16 | rows lo[64] | qh[8]     | signs[32]       | scales[4]  |
    group k of sub-block ib: row = lo[8ib + k] | ((qh[ib] >> k) & 1) << 8; 8 sign bits per byte;
    l = scales[ib/2] >> 4*(ib%2) & 15; weight = d * (1 + 2l) * iq3s_grid[row][i] * sign

ggml quirks kept: IQ3_S does not advance its ``qs``/``signs`` pointers past a sub-block whose
weights are all zero, so the following sub-blocks' rows and signs move down one slot (the high
bits in ``qh`` stay at their own sub-block). ggml aborts (``GGML_ASSERT``) when a neighbour search
finds no distance below FLT_MAX, which happens once the distances (~ |x|**3) overflow float32
(|x| from some 3e12 for IQ3_XXS, 1e13 for IQ3_S); the codecs raise
:class:`~mlxquant.errors.QuantInputError` there instead. The dequantizers flip the sign bit of a
negative weight as the compiled C does (a NaN scale gives a negative NaN).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from ...errors import QuantInputError
from ..buffers import output
from ..codec import Codec
from ..grids_iq3 import IQ3S_GRID, IQ3XXS_GRID, search_state
from .numeric import f16_to_f32, field, fp16_bytes, nearest_int_c, seq_sum

_F32 = np.float32
FLT_MAX = np.finfo(np.float32).max
EPS_XXS = _F32(1e-8)  # GROUP_MAX_EPS_IQ3_XXS; IQ3_S skips only max == 0
_STEP = 256  # super-blocks per chunk
_IEEE = dict(over="ignore", invalid="ignore", divide="ignore", under="ignore")

# ggml's ksigns_iq2xs: 7 sign bits and their parity as the 8th.
KSIGNS = np.array([s | ((bin(s).count("1") & 1) << 7) for s in range(128)], dtype=np.uint8)


class GridSearchAbort(QuantInputError):
    """ggml would abort on this input (a GGML_ASSERT in a grid quantizer)."""


@dataclass(frozen=True)
class GridSearch:
    """What differs between the grid searches of IQ3_XXS, IQ3_S and IQ2_S (same loop in ggml).

    A sub-block has ``groups`` grid points of ``group`` weights; a code packs ``group`` levels
    of ``bits`` bits (levels 0..kmaxq-1, values 2l + 1); trials ``is = -ntry..ntry`` use the
    inverse scale ``(2*kmaxq - 1 + is*step)/max``; ``refit_all``: IQ3_S's refit re-rounds every
    group (and starts with every group "off the grid"), the others only the off-grid ones.
    """

    qtype: str
    group: int
    groups: int
    bits: int
    kmaxq: int
    ntry: int
    step: float
    refit_all: bool
    kmap: np.ndarray     # (codes,) int32, ggml's map
    gridf: np.ndarray    # (points, group) float32 values 2l + 1
    table: np.ndarray    # (codes, nmax) int32 neighbour rows, see neighbour_table
    counts: np.ndarray   # (codes,) int32 list lengths (0 on the grid)


def neighbour_table(kmap: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's packed neighbour lists as a (len(kmap), nmax) int32 table, each list padded with
    its last entry (a repeat never wins: ggml keeps the first of equal distances), and the
    (len(kmap),) list lengths."""
    off = np.flatnonzero(kmap < 0)
    start = -kmap[off] - 1
    count = neighbours[start].astype(np.int64)
    j = np.minimum(np.arange(int(count.max()))[None], count[:, None] - 1)
    table = np.zeros((kmap.size, j.shape[1]), dtype=np.int32)
    table[off] = neighbours[start[:, None] + 1 + j]
    counts = np.zeros(kmap.size, dtype=np.int32)
    counts[off] = count
    return table, counts


@functools.cache
def iq3_search(qtype: str) -> GridSearch:
    s = search_state(256 if qtype == "IQ3_XXS" else 512)
    xxs = qtype == "IQ3_XXS"
    return GridSearch(qtype, 4, 8, 3, 8, 15 if xxs else 9, 0.2, not xxs,
                      s.kmap, s.grid.astype(_F32), *neighbour_table(s.kmap, s.neighbours))


def best_neighbours(gs: GridSearch, u: np.ndarray, xg: np.ndarray, wg: np.ndarray,
                    scale: np.ndarray) -> np.ndarray:
    """``iq{2,3}_find_best_neighbour`` for g off-grid codes ``u`` (g,), their |x| and sqrt
    weights (g, group) and scales (g,) -> (g,) grid rows. Short lists go first with a narrow
    slice of the padded table (most lists are short; a few are long)."""
    out = np.empty(u.size, dtype=np.int32)
    cnt = gs.counts[u]
    done = np.zeros(u.size, dtype=bool)
    for width in (4, 8, 16, gs.table.shape[1]):
        sel = np.flatnonzero(~done & (cnt <= width))
        if sel.size == 0:
            continue
        done[sel] = True
        cand = gs.table[u[sel], :width]                        # (g, width)
        q = gs.gridf[cand]                                     # (g, width, group)
        x, w, s = xg[sel], wg[sel], scale[sel]
        d2 = np.zeros(cand.shape, dtype=_F32)
        for i in range(gs.group):
            diff = s[:, None] * q[:, :, i] - x[:, i, None]
            d2 += (w[:, i, None] * diff) * diff
        d2[~(d2 < FLT_MAX)] = np.inf                          # C keeps d2 < best_d2 = FLT_MAX
        k = np.argmin(d2, axis=1)                              # first of equal distances
        rows = np.arange(sel.size)
        if np.isinf(d2[rows, k]).any():
            raise GridSearchAbort(f"{gs.qtype}: ggml aborts on this input (no grid neighbour "
                                  "closer than FLT_MAX: the weights overflow float32)")
        out[sel] = cand[rows, k]
    return out


def _grid_rows(gs: GridSearch, xa: np.ndarray, wsa: np.ndarray, inv: np.ndarray, scale: np.ndarray,
               sel: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Round (S, a) |x| with inverse scales (a,) to grid rows: (groups, a) rows and "code was on
    the grid"; off-grid groups (only those in ``sel``, if given) take their best neighbour for
    ``scale``."""
    a = xa.shape[1]
    v = nearest_int_c(_F32(0.5) * (inv[None] * xa - _F32(1)))
    l = np.clip(v, 0, gs.kmaxq - 1).reshape(gs.groups, gs.group, a)
    u = l[:, 0].copy()
    for i in range(1, gs.group):
        u |= l[:, i] << (gs.bits * i)                          # (groups, a) codes
    gi = gs.kmap[u]
    on = gi >= 0
    todo = ~on if sel is None else ~on & sel
    k, c = np.nonzero(todo)
    if k.size:
        shape = (gs.groups, gs.group, a)
        gi[k, c] = best_neighbours(gs, u[k, c], xa.reshape(shape)[k, :, c],
                                   wsa.reshape(shape)[k, :, c], scale[c])
    return gi, on


def _sums(gs: GridSearch, wx: np.ndarray, w: np.ndarray, gi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum w*x*q and sum w*q*q over the sub-block's positions, in C's order: (a,) each."""
    q = gs.gridf[gi].transpose(0, 2, 1).reshape(gs.groups * gs.group, -1)   # (S, a) values 2l + 1
    return seq_sum(wx * q, axis=0), seq_sum((w * q) * q, axis=0)


def grid_search(gs: GridSearch, xa: np.ndarray, wa: np.ndarray, wsa: np.ndarray,
                mx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scale search of active sub-blocks: (S, a) xval, weights, sqrt weights and (a,) max
    -> (a,) scales (before the sign flip), (groups, a) grid rows."""
    a = xa.shape[1]
    wx = wa * xa
    top = _F32(2 * gs.kmaxq - 1)
    best = np.zeros(a, dtype=_F32)
    scale = mx / top
    rows = np.full((gs.groups, a), gs.kmap[0], dtype=np.int32)  # L = 0 (code 0)
    on = np.full((gs.groups, a), not gs.refit_all)
    for t in range(-gs.ntry, gs.ntry + 1):
        inv = (top + _F32(t) * _F32(gs.step)) / mx
        gi, on_t = _grid_rows(gs, xa, wsa, inv, _F32(1) / inv)
        sqx, sq2 = _sums(gs, wx, wa, gi)
        better = (sq2 > 0) & (sqx * sqx > best * sq2)
        ratio = sqx / sq2
        scale = np.where(better, ratio, scale)
        best = np.where(better, ratio * sqx, best)
        rows = np.where(better[None], gi, rows)
        on = np.where(better[None], on_t, on)

    c = np.flatnonzero((~on).any(axis=0) & (scale > 0))       # refit with the chosen scale
    if c.size:
        sc = scale[c]
        sel = np.ones((gs.groups, c.size), dtype=bool) if gs.refit_all else ~on[:, c]
        gi, _ = _grid_rows(gs, xa[:, c], wsa[:, c], _F32(1) / sc, sc, sel)
        gi = np.where(sel, gi, rows[:, c])
        rows[:, c] = gi
        sqx, sq2 = _sums(gs, wx[:, c], wa[:, c], gi)
        scale[c] = np.where(sq2 > 0, sqx / sq2, sc)
    if (rows < 0).any():
        raise GridSearchAbort(f"{gs.qtype}: ggml aborts on this input (a point off the grid)")
    return scale, rows


def _encode(qtype: str, x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """(n, 256) float32 super-blocks and (n, 256) imatrix rows (or None) -> (n, 98 or 110) uint8."""
    xxs = qtype == "IQ3_XXS"
    n = x.shape[0]
    m = 8 * n
    xt = np.ascontiguousarray(x.reshape(m, 32).T)              # (32, m): column 8*blk + ib
    if qw is None:
        wt = xt * xt
    else:
        xs = np.ascontiguousarray(x.T)                         # (256, n)
        sigma2 = np.repeat(_F32(2) * seq_sum(xs * xs, axis=0) / _F32(256), 8)
        wt = np.ascontiguousarray(qw.reshape(m, 32).T) * np.sqrt(sigma2[None] + xt * xt)
    wst = np.sqrt(wt)
    neg = ~(xt >= 0)                                           # (32, m) sign bits
    xval = np.where(neg, -xt, xt)
    bits = neg.reshape(4, 8, m).astype(np.int32) << np.arange(8)[None, :, None]
    signs = bits.sum(axis=1)                                   # (4, m) sign bytes
    if xxs:                                                    # even number of minus signs
        v = ((wt * xt) * xt).reshape(4, 8, m)
        v = np.where(np.isnan(v), np.inf, v)
        v[:, 0] = np.where(np.isnan(v[:, 0]), -np.inf, v[:, 0])  # C: a NaN first stays the min
        imin = np.argmin(v, axis=1)                            # (4, m)
        k, c = np.nonzero(neg.reshape(4, 8, m).sum(axis=1) % 2 == 1)
        p = 8 * k + imin[k, c]
        xval[p, c] = -xval[p, c]
        signs[k, c] ^= 1 << imin[k, c]
        signs &= 127
    mx = xval.max(axis=0)
    active = ~(mx < EPS_XXS) if xxs else mx != 0

    scales = np.zeros(m, dtype=_F32)
    rows = np.zeros((8, m), dtype=np.int32)
    ai = np.flatnonzero(active)
    if ai.size:
        sc, gi = grid_search(iq3_search(qtype), xval[:, ai], wt[:, ai], wst[:, ai], mx[ai])
        flip = sc < 0
        sc = np.where(flip, -sc, sc)
        signs[:, ai[flip]] ^= 127 if xxs else 255
        if not (sc >= 0).all():
            raise GridSearchAbort(f"{qtype}: ggml aborts on this input (GGML_ASSERT(scale >= 0): "
                           "a sub-block scale is NaN)")
        scales[ai] = sc
        rows[:, ai] = gi

    scales = scales.reshape(n, 8)
    max_scale = scales.max(axis=1)
    d = max_scale / _F32(31)
    inv = _F32(1) / d
    ls = np.clip(nearest_int_c(_F32(0.5) * (inv[:, None] * scales - _F32(1))), 0, 15)  # (n, 8)
    zero = max_scale == 0
    dh = np.where(zero, _F32(0), d * _F32(1.0125 if xxs else 1.033))
    rows = rows.reshape(8, n, 8).transpose(1, 2, 0)            # (n, ib, k)
    signs = signs.reshape(4, n, 8).transpose(1, 2, 0)          # (n, ib, k)
    act = active.reshape(n, 8)

    out = np.zeros((n, 98 if xxs else 110), dtype=np.uint8)
    out[:, 0:2] = fp16_bytes(dh)
    if xxs:
        word = ls.astype(np.uint32) << 28
        for k in range(4):
            word |= np.where(act, signs[:, :, k], 0).astype(np.uint32) << (7 * k)
        out[:, 2:66] = np.where(act[:, :, None], rows, 0).reshape(n, 64)
        out[:, 66:98] = word.astype("<u4").view(np.uint8).reshape(n, 32)
        out[zero, 2:] = 0
        return out
    slot = np.cumsum(act, axis=1) - 1                          # where ggml's moving pointers write
    b, ib = np.nonzero(act)
    qs = out[:, 2:66].reshape(n, 8, 8)
    qs[b, slot[b, ib]] = rows[b, ib] & 255
    sg = out[:, 74:106].reshape(n, 8, 4)
    sg[b, slot[b, ib]] = signs[b, ib]
    hi = ((rows >> 8) << np.arange(8)).sum(axis=2)             # (n, 8): qh[ib] bit k
    out[:, 66:74] = np.where(act, hi, 0)
    ls = np.where(zero[:, None], 0, ls)
    out[:, 106:110] = ls[:, 0::2] | (ls[:, 1::2] << 4)
    return out


def _signed(db: np.ndarray, g: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(n, 8) sub-block scales, (n, 8, 32) grid values and (n, 8, 4, 8) sign bits -> (n, 256)
    ``db * g * (neg ? -1 : 1)``. The compiled C flips the sign bit for the ``-1`` (a NaN scale
    comes out negative, which a multiply would not do); so does this."""
    n = db.shape[0]
    out = output((n, 256), _F32)
    np.multiply(db[:, :, None], g, out=out.reshape(n, 8, 32))
    bits = out.view(np.uint32)
    bits ^= neg.reshape(n, 256).astype(np.uint32) << np.uint32(31)
    return out


def _decode_xxs(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    d = f16_to_f32(field(b, 0, 2).view("<u2").reshape(n))      # (n,)
    word = field(b, 66, 98).view("<u4").astype(np.int64)       # (n, 8)
    db = (d[:, None] * (_F32(0.5) + (word >> 28).astype(_F32))) * _F32(0.5)
    g = IQ3XXS_GRID[field(b, 2, 66)].reshape(n, 8, 32).astype(_F32)
    sb = KSIGNS[(word[:, :, None] >> (7 * np.arange(4))) & 127]              # (n, 8, 4)
    neg = (sb[:, :, :, None] >> np.arange(8, dtype=np.uint8)) & 1           # (n, 8, 4, 8)
    return _signed(db, g, neg)


def _decode_s(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    d = f16_to_f32(field(b, 0, 2).view("<u2").reshape(n))
    sc = field(b, 106, 110).astype(np.int32)
    ib = np.arange(8)
    nib = (sc[:, ib // 2] >> (4 * (ib % 2))) & 15               # (n, 8)
    db = d[:, None] * (1 + 2 * nib).astype(_F32)
    qh = field(b, 66, 74).astype(np.int32)
    rows = field(b, 2, 66).astype(np.int32).reshape(n, 8, 8) | (((qh[:, :, None] >> ib) & 1) << 8)
    g = IQ3S_GRID[rows].reshape(n, 8, 32).astype(_F32)
    neg = (field(b, 74, 106).reshape(n, 8, 4, 1) >> np.arange(8, dtype=np.uint8)) & 1
    return _signed(db, g, neg)


def encode_in_steps(encode: Callable[[np.ndarray, np.ndarray | None], np.ndarray], x: np.ndarray,
                    imatrix: np.ndarray | None, block_bytes: int, step: int) -> np.ndarray:
    """``encode(xb, qw)`` over the 256-weight super-blocks of ``x`` (rows, cols) float32, ``step``
    super-blocks at a time (bounding the temporaries); ``qw`` is each block's slice of ``imatrix``
    (cols,), or None. Returns the (rows, cols // 256 * block_bytes) uint8 blocks."""
    rows, cols = x.shape
    per_row = cols // 256
    xb = x.reshape(-1, 256)
    out = output((rows, per_row * block_bytes), np.uint8)
    blocks = out.reshape(len(xb), block_bytes)
    qw = None if imatrix is None else imatrix.reshape(per_row, 256)
    for b in range(0, len(xb), step):
        e = min(b + step, len(xb))
        blocks[b:e] = encode(xb[b:e], None if qw is None else qw[np.arange(b, e) % per_row])
    return out


class GridCodec(Codec):
    """NumPy codec of a grid i-quant whose ``encode(xb, qw)`` encodes (m, 256) super-blocks (``qw``
    their imatrix weights, or None): run ``step`` super-blocks at a time, floating-point
    warnings off (ggml's IEEE behaviour on huge inputs is part of the result)."""

    encode: ClassVar[Callable[[np.ndarray, np.ndarray | None], np.ndarray]]
    step: ClassVar[int] = _STEP

    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        return cls.encode_rows_weighted(x, None)

    @classmethod
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        with np.errstate(**_IEEE):
            return encode_in_steps(cls.encode, x, imatrix, cls.qtype.type_size, cls.step)


class _IQ3(GridCodec):
    """Shared driver: both ggml paths (with and without imatrix) run the same search."""

    @classmethod
    def encode(cls, xb: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        return _encode(cls.qtype.name, xb, qw)


class IQ3_XXS(_IQ3, qtype="IQ3_XXS"):
    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        with np.errstate(**_IEEE):
            return _decode_xxs(np.ascontiguousarray(blocks))


class IQ3_S(_IQ3, qtype="IQ3_S"):
    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        with np.errstate(**_IEEE):
            return _decode_s(np.ascontiguousarray(blocks))
