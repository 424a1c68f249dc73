"""IQ4_NL and IQ4_XS on MLX arrays (twin of ``mlxquant/quant/numpy/iquants.py``: same algorithm, same
function names, same bytes as ggml's ``quantize_row_iq4_nl_impl`` through ``ggml_quantize_chunk``).

The algorithm, the block layouts and the exactness notes are in the NumPy module. In short: the
nearest table value ``best_index_int8`` is a lookup on ``floor(2v)`` (clipped; NaN goes to the top
code); sums run position by position in float32 (``acc = acc + a[j]``, never ``mx.sum``); the
first largest |x| is found with order-independent reductions. Nothing is ``mx.compile``d, so no
``a*b + c`` can become an FMA.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..numpy import iquants as _np_iq
from ..codec import Codec
from .codec import in_chunks
from .numeric import (
    F32,
    GROUP_MAX_EPS,
    first_absmax,
    fp16_bytes,
    fp16_from_bytes,
    inverse,
    nearest_int_c,
    pack_halves,
    pack_nibbles,
    seq_sum,
)

NTRY = 7
KVALUES_IQ4NL = mx.array(_np_iq.KVALUES_IQ4NL)
_KV0 = int(_np_iq.KVALUES_IQ4NL[0])  # -127

# Code values by floor(2v), indexed by floor(2v) - _LO for floor(2v) in [_LO, _HI] (-232..202).
_LO, _HI = float(_np_iq._LO), float(_np_iq._HI)
_FLOORS = np.arange(int(_LO), int(_HI) + 1)
_CODE_TAB = mx.array(_np_iq._CODE_TAB[_FLOORS])  # (435,) uint8
_Q_TAB = mx.array(_np_iq._Q_TAB[_FLOORS])  # (435,) float32 kvalues[code]
_KV_F32 = mx.array(_np_iq._KV_F32)  # (16,) float32

# Weights per evaluated chunk (the search holds (32, 16, m) trial arrays, 16x the chunk). Measured
# on the 2-core CPU, IQ4_XS on 1024x4096: 3.0-3.1 / 2.5-2.9 / 2.3 million weights/s at 2**16 /
# 2**17 / 2**18 (2**14: 1.7, per-op overhead).
CHUNK_WEIGHTS = 1 << 16


def _table_index(v2: mx.array) -> mx.array:
    """Doubled scaled values (float32) -> int32 indices into the code tables.

    Clipping maps ±inf to the ends; NaN (an overflowed inverse scale times 0) goes to the top
    code, as in C, where every comparison with NaN is false.
    """
    v2 = mx.where(mx.isnan(v2), _HI, mx.clip(v2, _LO, _HI))
    return (mx.floor(v2) - _LO).astype(mx.int32)


def best_codes(v2: mx.array) -> mx.array:
    """``best_index_int8(16, kvalues_iq4nl, v)`` given ``v2 = 2*v``, float32 -> uint8 codes."""
    return mx.take(_CODE_TAB, _table_index(v2))


def _search_scales(xt: mx.array, wt: mx.array) -> mx.array:
    """The per-sub-block scale search of ``quantize_row_iq4_nl_impl`` (ntry = 7).

    Args:
        xt: (32, m) float32 weights, position-major (column = one 32-weight sub-block).
        wt: (32, m) float32 importance of each weight.

    Returns:
        (m,) float32 scales; 0 for sub-blocks whose max |x| is below GROUP_MAX_EPS.
    """
    amax, mxv = first_absmax(xt, axis=0)
    ok = mx.logical_not(amax < GROUP_MAX_EPS)
    mxv = mx.where(ok, mxv, 1.0)  # signed value of the max |x|

    # (16, m) trial inverse scales, doubled: 1/(max/127), then (itry + values[0])/max
    trials = [1.0 / (mxv / 127.0)]
    trials += [float(itry + _KV0) / mxv for itry in range(-NTRY, NTRY + 1)]
    ids = mx.stack(trials) * 2.0  # (16, m)

    # position-major (32, 16, m): the sums below add whole (16, m) slices one after the other.
    # no NaN here: |mxv| >= GROUP_MAX_EPS keeps every trial inverse scale finite
    v2 = xt[:, None, :] * ids[None]
    q = mx.take(_Q_TAB, _table_index(v2))  # (32, 16, m) code values
    w = wt[:, None, :]
    wq = w * q  # w*q
    sumqx = seq_sum(wq * xt[:, None, :], axis=0)  # (16, m): Σ (w*q)*x
    sumq2 = seq_sum(wq * q, axis=0)  # Σ (w*q)*q

    ratio = sumqx / sumq2  # (16, m)
    d = mx.where(sumq2[0] > 0, ratio[0], 0.0)
    best = d * sumqx[0]
    for t in range(1, 2 * NTRY + 2):
        better = (sumq2[t] > 0) & (sumqx[t] * sumqx[t] > best * sumq2[t])
        d = mx.where(better, ratio[t], d)
        best = mx.where(better, ratio[t] * sumqx[t], best)
    return mx.where(ok, d, 0.0)


def _weights(xt: mx.array, qwt: mx.array | None, sigma2: mx.array | None) -> mx.array:
    """(32, m) importance: ``x*x`` without an imatrix, else ``qw * sqrtf(sigma2 + x*x)``."""
    sq = xt * xt
    if qwt is None:
        return sq
    return qwt * mx.sqrt(sq + sigma2[None])


def grid_codes(xt: mx.array, inv: mx.array) -> mx.array:
    """(32, m) weights and (m,) inverse scales -> (m, 32) uint8 codes of ``inv * x``."""
    v2 = (inv * 2.0)[None] * xt
    return best_codes(v2).T


def _encode_nl(x: mx.array, qw: mx.array | None) -> mx.array:
    """(m, 32) float32 blocks and their (m, 32) imatrix rows (or None) -> (m, 18) uint8."""
    xt = mx.contiguous(x.T)  # (32, m)
    sigma2 = qwt = None
    if qw is not None:
        qwt = mx.contiguous(qw.T)
        sigma2 = seq_sum(xt * xt, axis=0) * (2.0 / 32)
    d = _search_scales(xt, _weights(xt, qwt, sigma2))  # (m,)
    inv = inverse(d)
    return mx.concatenate([fp16_bytes(d), pack_halves(grid_codes(xt, inv))], axis=1)


def _encode_xs(x: mx.array, qw: mx.array | None) -> mx.array:
    """(n, 256) float32 super-blocks and (n, 256) imatrix rows (or None) -> (n, 136) uint8."""
    n = x.shape[0]
    xt = mx.contiguous(x.reshape(n * 8, 32).T)  # (32, 8n): column 8*sb + ib
    sigma2 = qwt = None
    if qw is not None:
        qwt = mx.contiguous(qw.reshape(n * 8, 32).T)
        sq = mx.contiguous(x.T)  # (256, n), j-major
        sigma2 = seq_sum(sq * sq, axis=0) * (2.0 / 256)
        sigma2 = mx.repeat(sigma2, 8)  # (8n,)
    scales = _search_scales(xt, _weights(xt, qwt, sigma2)).reshape(n, 8)

    # C: `abs_d > amax_scale` from 0 picks the first largest |scale| and skips NaN
    _, max_scale = first_absmax(scales, axis=1)
    d = -max_scale / 32.0  # (n,), -0.0 for an all-zero block
    inv = inverse(d)
    ls = mx.clip(nearest_int_c(inv[:, None] * scales), -32, 31)  # (n, 8) int32
    dl = d[:, None] * ls.astype(F32)
    idl = inverse(dl)
    codes = grid_codes(xt, idl.reshape(-1)).reshape(n, 256)

    ls = (ls + 32).astype(mx.uint16)  # 0..63
    h = (ls >> 4) << (2 * mx.arange(8, dtype=mx.uint16))  # (n, 8): disjoint bits
    h = h[:, 0] | h[:, 1] | h[:, 2] | h[:, 3] | h[:, 4] | h[:, 5] | h[:, 6] | h[:, 7]
    ls8 = ls.astype(mx.uint8)
    return mx.concatenate(
        [
            fp16_bytes(d),
            mx.contiguous(h).view(mx.uint8).reshape(n, 2),  # little-endian u16
            pack_nibbles(ls8[:, 0::2], ls8[:, 1::2]),
            pack_halves(codes.reshape(n * 8, 32)).reshape(n, 128),
        ],
        axis=1,
    )


def _decode_nibbles(qs: mx.array, d: mx.array) -> mx.array:
    """(m, 16) packed bytes and (m, 1) scales -> (m, 32) float32 ``d * kvalues[code]``."""
    lo = mx.take(_KV_F32, (qs & 0xF).astype(mx.int32))
    hi = mx.take(_KV_F32, (qs >> 4).astype(mx.int32))
    return mx.concatenate([d * lo, d * hi], axis=1)


class _IQ4(Codec):
    """Shared driver: both ggml paths (with and without imatrix) run the same search."""

    _sub = 1  # 32-weight sub-blocks per block

    @classmethod
    def _encode(cls, x: mx.array, qw: mx.array | None) -> mx.array:
        raise NotImplementedError

    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        x = x.astype(F32)
        bs = cls.qtype.block_size
        return in_chunks(lambda b0, b1: cls._encode(x[b0:b1], None), x.shape[0], bs, CHUNK_WEIGHTS)

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        rows, cols = x.shape
        bs = cls.qtype.block_size
        per_row = cols // bs
        x = x.astype(F32)
        qw_row = imatrix.astype(F32).reshape(1, per_row, bs)  # imatrix by block in a row

        def chunk(r0: int, r1: int) -> mx.array:
            qw = mx.broadcast_to(qw_row, (r1 - r0, per_row, bs)).reshape(-1, bs)
            return cls._encode(x[r0:r1].reshape(-1, bs), qw)

        return in_chunks(chunk, rows, cols, CHUNK_WEIGHTS).reshape(rows, cls.qtype.row_bytes(cols))


class IQ4_NL(_IQ4, qtype="IQ4_NL", backend="mlx"):
    _sub = 1

    @classmethod
    def _encode(cls, x: mx.array, qw: mx.array | None) -> mx.array:
        return _encode_nl(x, qw)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        d = fp16_from_bytes(blocks[:, 0:2])  # (n,)
        return _decode_nibbles(blocks[:, 2:18], d[:, None])


class IQ4_XS(_IQ4, qtype="IQ4_XS", backend="mlx"):
    _sub = 8

    @classmethod
    def _encode(cls, x: mx.array, qw: mx.array | None) -> mx.array:
        return _encode_xs(x, qw)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        n = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, 0:2])  # (n,)
        h = mx.contiguous(blocks[:, 2:4]).view(mx.uint16).reshape(n, 1).astype(mx.int32)
        lo = blocks[:, 4:8].astype(mx.int32)
        ib = mx.arange(8, dtype=mx.int32)
        ls = ((lo[:, ib // 2] >> (4 * (ib % 2))) & 0xF) | (((h >> (2 * ib)) & 3) << 4)
        dl = d[:, None] * (ls - 32).astype(F32)  # (n, 8)
        out = _decode_nibbles(blocks[:, 8:136].reshape(n * 8, 16), dl.reshape(-1, 1))
        return out.reshape(n, 256)
