"""Non-linear 4-bit types: IQ4_NL (32 weights per block) and IQ4_XS (256 weights per block).

Both store codes into ggml's 16-entry ``kvalues_iq4nl`` table and share ggml's quantizer
``quantize_row_iq4_nl_impl`` (ggml-quants.c): per 32-weight sub-block, a scale search over 16
candidates (the amax-based one and ``(itry - 127)/max`` for ``itry`` in -7..7) keeps the scale
with the best weighted least-squares fit. IQ4_XS then quantizes the 8 sub-block scales to 6 bits
against an fp16 super-block scale and re-derives the codes. ``ggml_quantize_chunk`` runs the same
function with and without an importance matrix (weights ``x**2`` without one; with one
``imatrix[j] * sqrt(sigma2 + x[j]**2)``, ``sigma2 = 2/S * sum x**2`` over the S-weight block).
This is *not* ``quantize_row_iq4_nl_ref`` (which skips the search: other bytes).

IQ4_NL block (18 bytes, 32 weights)::

    byte  0  1   2 ............ 17
          | d:f16 | qs[0:16]       |   weight j is qs[j] & 0xF, weight j + 16 is qs[j] >> 4

IQ4_XS block (136 bytes, 256 weights = 8 sub-blocks of 32)::

    byte  0  1   2  3       4 .. 7        8 ........... 135
          | d:f16 | scales_h:u16 | scales_l[0:4] | qs[0:128]   |
    sub-block ib: 6-bit ls = (scales_l[ib/2] >> 4*(ib%2)) & 0xF | ((scales_h >> 2*ib) & 3) << 4
                  scale d * (ls - 32); weights qs[16*ib + j] & 0xF and >> 4 as in IQ4_NL

Exactness notes. ``best_index_int8`` (nearest table value, ties to the upper one; every
subtraction near a midpoint is exact in float32) equals "number of midpoints ``m <= v``". The
midpoints are multiples of 1/2, so the code is a table lookup on ``floor(2v)``, floored before
any offset is added (``2v + 232`` would round 6.9999995*2 up to the threshold 14), with
``2*(id*x)`` computed as ``(2*id)*x`` (scaling by 2 commutes with rounding). Sums run position
by position in float32 (:func:`~.numeric.seq_sum`). Extreme inputs (|x| ~ 1e13 and up) overflow to inf
and NaN inside ggml's arithmetic; that is reproduced too (``nearest_int`` bit trick on NaN,
NaN scales skipped by the max-scale search, NaN codes going to 15).
"""

from __future__ import annotations

import numpy as np

from ..codec import Codec
from ..buffers import output
from .numeric import (
    GROUP_MAX_EPS,
    first_absmax,
    fp16_bytes,
    inverse,
    f16_field,
    field,
    nearest_int_c,
    pack_halves,
    pack_nibbles,
    seq_sum,
    split_nibbles,
)

_F32 = np.float32
KVALUES_IQ4NL = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8
)
_KV_F32 = KVALUES_IQ4NL.astype(_F32)
NTRY = 7

# Codes by floor(2v): 2 * midpoint for each pair of neighbours, all integers (-231 ... 202).
# The tables are indexed by floor(2v) clipped to [-232, 202]; negative indices wrap to the end.
_MID2 = (KVALUES_IQ4NL[:-1].astype(np.int32) + KVALUES_IQ4NL[1:])
_LO, _HI = _F32(int(_MID2[0]) - 1), _F32(int(_MID2[-1]))      # -232, 202
_FLOORS = np.arange(int(_LO), int(_HI) + 1)
_CODE_TAB = np.zeros(512, dtype=np.uint8)
_CODE_TAB[_FLOORS] = np.searchsorted(_MID2, _FLOORS, side="right")
_Q_TAB = _KV_F32[_CODE_TAB]

# Sub-blocks of 32 weights per inner step: keeps the (16, 32, m) trial arrays in cache.
_STEP = 512

# ggml's float arithmetic overflows to inf and makes NaN on extreme inputs; those values are
# part of what the bytes reproduce, so they raise no warnings.
_IEEE = dict(over="ignore", invalid="ignore", divide="ignore", under="ignore")

# The clip ufunc itself (np.clip's Python wrapper costs ~3x more on these arrays); np.clip
# where a NumPy build does not expose it.
_clip = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", np.clip)


def _table_index(v2: np.ndarray, nan_possible: bool = True) -> np.ndarray:
    """Doubled scaled values (any shape, float32; overwritten) -> indices into the code tables.

    NaN (only from an overflowed inverse scale times 0) goes to the top code, as in C, where
    every comparison with NaN is false.
    """
    _clip(v2, _LO, _HI, out=v2)                                # also maps ±inf to the ends
    if nan_possible and not np.isfinite(v2).all():
        np.nan_to_num(v2, copy=False, nan=_HI)
    np.floor(v2, out=v2)
    return v2.astype(np.intp)


def best_codes(v2: np.ndarray) -> np.ndarray:
    """``best_index_int8(16, kvalues_iq4nl, v)`` given ``v2 = 2*v``, float32 -> uint8 codes."""
    return _CODE_TAB[_table_index(v2)]


def _search_scales(xt: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """The per-sub-block scale search of ``quantize_row_iq4_nl_impl`` (ntry = 7).

    Args:
        xt: (32, m) float32 weights, position-major (column = one 32-weight sub-block).
        wt: (32, m) float32 importance of each weight.

    Returns:
        (m,) float32 scales; 0 for sub-blocks whose max |x| is below GROUP_MAX_EPS.
    """
    m = xt.shape[1]
    amax, mx = first_absmax(xt, axis=0)                        # C's first largest |x|
    ok = ~(amax < GROUP_MAX_EPS)
    mx = np.where(ok, mx, _F32(1))                             # signed value of the max |x|

    ids = np.empty((2 * NTRY + 2, m), dtype=_F32)             # (16, m): trial 1/scale values
    ids[0] = _F32(1) / (mx / _F32(127))                        # d = -max/values[0]; id = 1/d
    for k, itry in enumerate(range(-NTRY, NTRY + 1)):
        ids[k + 1] = _F32(itry + int(KVALUES_IQ4NL[0])) / mx  # (itry + values[0])/max
    ids *= _F32(2)

    v2 = ids[:, None, :] * xt[None]                            # (16, 32, m)
    # no NaN here: |mx| >= GROUP_MAX_EPS keeps every trial inverse scale finite
    q = _Q_TAB[_table_index(v2, nan_possible=False)]           # (16, 32, m) code values
    wq = np.multiply(wt[None], q)                              # w*q
    np.multiply(wq, q, out=q)                                  # w*q*q
    np.multiply(wq, xt[None], out=wq)                          # w*q*x
    sumqx = seq_sum(wq, axis=1)                                # (16, m)
    sumq2 = seq_sum(q, axis=1)

    ratio = sumqx / sumq2                                      # (16, m)
    d = np.where(sumq2[0] > 0, ratio[0], _F32(0))
    best = d * sumqx[0]
    for t in range(1, 2 * NTRY + 2):
        better = (sumq2[t] > 0) & (sumqx[t] * sumqx[t] > best * sumq2[t])
        d = np.where(better, ratio[t], d)
        best = np.where(better, ratio[t] * sumqx[t], best)
    return np.where(ok, d, _F32(0))


def _weights(xt: np.ndarray, qwt: np.ndarray | None, sigma2: np.ndarray | None) -> np.ndarray:
    """(32, m) importance: ``x*x`` without an imatrix, else ``qw * sqrtf(sigma2 + x*x)``."""
    sq = xt * xt
    if qwt is None:
        return sq
    sq += sigma2[None]
    np.sqrt(sq, out=sq)
    return np.multiply(qwt, sq, out=sq)


def _codes(xt: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """(32, m) weights and (m,) inverse scales -> (m, 32) uint8 codes of ``inv * x``."""
    v2 = (inv * _F32(2))[None] * xt
    return np.ascontiguousarray(best_codes(v2).T)


def _encode_nl(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """(m, 32) float32 blocks and their (m, 32) imatrix rows (or None) -> (m, 18) uint8."""
    xt = np.ascontiguousarray(x.T)                             # (32, m)
    sigma2 = qwt = None
    if qw is not None:
        qwt = np.ascontiguousarray(qw.T)
        sigma2 = seq_sum(xt * xt, axis=0) * _F32(2.0 / 32)
    d = _search_scales(xt, _weights(xt, qwt, sigma2))          # (m,)
    inv = inverse(d)
    out = np.empty((x.shape[0], 18), dtype=np.uint8)
    out[:, 0:2] = fp16_bytes(d)
    out[:, 2:18] = pack_halves(_codes(xt, inv))
    return out


def _encode_xs(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """(n, 256) float32 super-blocks and (n, 256) imatrix rows (or None) -> (n, 136) uint8."""
    n = x.shape[0]
    xt = np.ascontiguousarray(x.reshape(n * 8, 32).T)          # (32, 8n): column 8*sb + ib
    sigma2 = qwt = None
    if qw is not None:
        qwt = np.ascontiguousarray(qw.reshape(n * 8, 32).T)
        sq = np.ascontiguousarray(x.T)                         # (256, n), j-major
        sigma2 = seq_sum(sq * sq, axis=0) * _F32(2.0 / 256)
        sigma2 = np.repeat(sigma2, 8)                          # (8n,)
    scales = _search_scales(xt, _weights(xt, qwt, sigma2)).reshape(n, 8)

    _, max_scale = first_absmax(scales, axis=1)                # C's `abs_d > amax_scale`, skips NaN
    d = -max_scale / _F32(32)                                  # (n,), -0.0 for an all-zero block
    inv = inverse(d)
    ls = np.clip(nearest_int_c(inv[:, None] * scales), -32, 31)   # (n, 8) int32
    dl = d[:, None] * ls.astype(_F32)
    idl = inverse(dl)
    codes = _codes(xt, idl.reshape(-1)).reshape(n, 256)

    ls = (ls + 32).astype(np.uint8)                            # 0..63
    out = np.empty((n, 136), dtype=np.uint8)
    out[:, 0:2] = fp16_bytes(d)
    h = np.zeros(n, dtype=np.uint16)
    for k in range(8):
        h |= (ls[:, k] >> 4).astype(np.uint16) << (2 * k)
    out[:, 2:4] = h.astype("<u2").view(np.uint8).reshape(n, 2)
    out[:, 4:8] = pack_nibbles(ls[:, 0::2], ls[:, 1::2])
    out[:, 8:136] = pack_halves(codes.reshape(n * 8, 32)).reshape(n, 128)
    return out


def _decode_nibbles(qs: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(m, 16) packed bytes and (m, 1) scales -> (m, 32) float32 ``d * kvalues[code]``: codes
    unpacked with word operations, values from the int8 table, one multiply."""
    v = np.take(KVALUES_IQ4NL, split_nibbles(qs))              # (m, 32) int8
    with np.errstate(**_IEEE):
        return np.multiply(v, d, out=output(v.shape, _F32))


class _IQ4(Codec):
    """Shared driver: both ggml paths (with and without imatrix) run the same search."""

    _sub = 1  # 32-weight sub-blocks per block

    @classmethod
    def _encode(cls, x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        step = max(1, _STEP // cls._sub)
        out = np.empty((x.shape[0], cls.qtype.type_size), dtype=np.uint8)
        with np.errstate(**_IEEE):
            for b in range(0, x.shape[0], step):
                out[b : b + step] = cls._encode(x[b : b + step], None)
        return out

    @classmethod
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        rows, cols = x.shape
        bs = cls.qtype.block_size
        per_row = cols // bs
        xb = x.reshape(-1, bs)
        qw = imatrix.reshape(per_row, bs)                      # imatrix rows by block in a row
        step = max(1, _STEP // cls._sub)
        out = np.empty((xb.shape[0], cls.qtype.type_size), dtype=np.uint8)
        with np.errstate(**_IEEE):
            for b in range(0, xb.shape[0], step):
                e = min(b + step, xb.shape[0])
                out[b:e] = cls._encode(xb[b:e], qw[np.arange(b, e) % per_row])
        return out.reshape(rows, cls.qtype.row_bytes(cols))


class IQ4_NL(_IQ4, qtype="IQ4_NL"):
    _sub = 1

    @classmethod
    def _encode(cls, x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        return _encode_nl(x, qw)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(blocks)
        return _decode_nibbles(field(b, 2, 18), f16_field(b, 0)[:, None])


class IQ4_XS(_IQ4, qtype="IQ4_XS"):
    _sub = 8

    @classmethod
    def _encode(cls, x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        return _encode_xs(x, qw)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(blocks)
        n = b.shape[0]
        d = f16_field(b, 0)                                     # (n,)
        h = field(b, 2, 4).view("<u2").astype(np.int32)          # (n, 1)
        lo = field(b, 4, 8).astype(np.int32)
        ib = np.arange(8)
        ls = ((lo[:, ib // 2] >> (4 * (ib % 2))) & 0xF) | (((h >> (2 * ib)) & 3) << 4)
        with np.errstate(**_IEEE):
            dl = d[:, None] * (ls - 32).astype(_F32)           # (n, 8)
        v = np.take(KVALUES_IQ4NL, split_nibbles(field(b, 8, 136).reshape(n * 8, 16)))
        out = output((n, 256), _F32)
        with np.errstate(**_IEEE):
            np.multiply(v.reshape(n, 8, 32), dl[:, :, None], out=out.reshape(n, 8, 32))
        return out
