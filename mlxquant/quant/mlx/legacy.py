"""The legacy 32-weight block types on MLX arrays: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Twin of ``mlxquant/quant/numpy/legacy.py`` (same block layouts, same bytes as ggml's
``quantize_row_q*_ref`` / ``quantize_row_q*_impl`` / ``dequantize_row_q*``)::

    Q4_0  18 B  | d:f16 | qs[16]                    |   x = (q - 8) * d
    Q4_1  20 B  | d:f16 | m:f16 | qs[16]            |   x = q * d + m
    Q5_0  22 B  | d:f16 | qh:u32 | qs[16]           |   x = (q - 16) * d
    Q5_1  24 B  | d:f16 | m:f16 | qh:u32 | qs[16]   |   x = q * d + m
    Q8_0  34 B  | d:f16 | qs[32]:int8               |   x = q * d

    qs[j]  bits 0-3: low nibble of q[j]   bits 4-7: low nibble of q[j+16]     (j < 16)
    qh     bit j: bit 4 of q[j]                                               (j < 32)

Exactness, as in the NumPy reference: ``id = 1/d`` then ``x*id``; codes are C's ``(int8_t)``
truncation of a float (x86-64 ``cvttss2si``: NaN and out-of-range give INT_MIN, then the low
byte), written out with explicit ``where``s so no backend's own float->int rule decides; Q8_0
rounds with ``roundf`` (halves away from zero); the max-|x| and min/max scans keep the first
index on ties (found with order-independent ``max``/``min`` reductions, never argmax tie rules);
the imatrix path's ``sum_x2`` adds the columns one after another in float32.

Nothing is ``mx.compile``d: each multiply and add is its own op, so no backend can contract
``a*b + c`` into an FMA (the reference bytes are ggml's non-FMA x86-64 ones; an FMA would move
rounding decisions). What stays unverified on Metal (no Apple GPU here): that MLX's GPU kernels
keep IEEE division and sqrt and do not flush subnormal ``d``/``x`` to zero.

Big inputs are processed in row chunks of about :data:`~.codec.CHUNK_WEIGHTS` weights, each
evaluated before the next (:class:`~.codec.ChunkedCodec`), which bounds the graph and the temporaries.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx

from ..codec import Codec
from .codec import CHUNK_WEIGHTS, ChunkedCodec, in_chunks
from .numeric import F32, abs_max, c_int32, fp16_bytes, fp16_from_bytes, inverse, pack_halves, seq_sum
from .search_scale import make_qx_quants
from .search_scale_min import make_qkx3_quants

QK = 32
_POS = mx.arange(QK, dtype=mx.int32)  # (32,) positions inside a block
_QH_SHIFT = mx.arange(QK, dtype=mx.uint32)  # bit j of qh
_RMIN, _RDELTA, _NSTEP = -0.9, 0.05, 36  # make_qkx3_quants(..., -0.9f, 0.05f, 36, false)


# -- scans over a block -------------------------------------------------------------------------
def _first_where(x: mx.array, hit: mx.array) -> mx.array:
    """(n, 32) values and hits -> (n,) the value at the first hit of each row (one must hit)."""
    idx = mx.min(mx.where(hit, _POS, QK), axis=1, keepdims=True)  # (n, 1)
    return mx.take_along_axis(x, idx, axis=1)[:, 0]


def _signed_absmax(x: mx.array) -> mx.array:
    """ggml's ``if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`` from ``amax = max = 0``:
    the first value of largest magnitude, +0.0 for an all-zero block. (n, 32) -> (n,).

    On finite blocks this is :func:`~.numeric.first_absmax` (which also skips NaN) in fewer ops.
    """
    a = mx.abs(x)
    amax = mx.max(a, axis=1, keepdims=True)  # (n, 1)
    sel = _first_where(x, a == amax)
    return mx.where(amax[:, 0] == 0, mx.array(0.0, F32), sel)


def _first_min_max(x: mx.array) -> tuple[mx.array, mx.array]:
    """``if (v < min) min = v; if (v > max) max = v;``: first min and max (a zero's sign is the
    first zero's). (n, 32) -> (n,), (n,)."""
    mn = mx.min(x, axis=1, keepdims=True)
    mxv = mx.max(x, axis=1, keepdims=True)
    return _first_where(x, x == mn), _first_where(x, x == mxv)


# -- float -> code conversions ------------------------------------------------------------------
def _c_int8(v: mx.array) -> mx.array:
    """``(int8_t)v`` for float32 ``v``: cvttss2si, then the low byte."""
    return c_int32(v).astype(mx.int8)


def _codes(v: mx.array, top: int) -> mx.array:
    """``(uint8_t)MIN(top, (int8_t)v)``: (n, 32) float32 -> uint8."""
    return mx.minimum(_c_int8(v), top).astype(mx.uint8)


def _roundf(v: mx.array) -> mx.array:
    """C's ``roundf`` (halves away from zero) on float32; inf and NaN pass through."""
    t = mx.trunc(v)
    frac = v - t  # exact
    return t + mx.where(mx.abs(frac) >= 0.5, mx.sign(v), mx.array(0.0, F32))


# -- packing ------------------------------------------------------------------------------------
def _unpack_nibbles(qs: mx.array) -> mx.array:
    """(n, 16) packed bytes -> (n, 32) uint8 low 4 bits of every code."""
    return mx.concatenate([qs & 15, qs >> 4], axis=1)


def _pack_qh(q: mx.array) -> mx.array:
    """(n, 32) codes -> (n, 4) uint8: bit j of the little-endian u32 is bit 4 of q[j]."""
    bits = ((q >> 4) & 1).astype(mx.uint32) << _QH_SHIFT  # (n, 32) distinct bits
    return mx.sum(bits, axis=1).astype(mx.uint32).view(mx.uint8).reshape(-1, 4)  # exact


def _unpack_qh(qh: mx.array) -> mx.array:
    """(n, 4) uint8 -> (n, 32) uint8 holding the fifth bit (0 or 16) of every code."""
    u = qh.astype(mx.uint32)
    word = u[:, 0:1] | (u[:, 1:2] << 8) | (u[:, 2:3] << 16) | (u[:, 3:4] << 24)  # (n, 1)
    return (((word >> _QH_SHIFT) & 1) << 4).astype(mx.uint8)


def _assemble(d: mx.array, qs: mx.array, m: mx.array | None = None, qh: mx.array | None = None) -> mx.array:
    """d (n,) f32, [m (n,) f32], [qh (n, 4)], qs (n, k) uint8 -> (n, type_size) block bytes."""
    parts = [fp16_bytes(d)]
    if m is not None:
        parts.append(fp16_bytes(m))
    if qh is not None:
        parts.append(qh)
    parts.append(qs)
    return mx.concatenate(parts, axis=1)


# -- quantizers shared by the pairs of types ----------------------------------------------------
def _encode_symmetric(x: mx.array, nmax: int) -> tuple[mx.array, mx.array]:
    """quantize_row_q4_0_ref (nmax 8) / q5_0_ref (nmax 16): x (n, 32) -> d (n,), codes (n, 32)."""
    d = _signed_absmax(x) / float(-nmax)  # (n,)
    v = x * inverse(d)[:, None]  # (n, 32) x*id
    v = v + (nmax + 0.5)
    return d, _codes(v, 2 * nmax - 1)


def _encode_asymmetric(x: mx.array, nmax: int, clamp: bool) -> tuple[mx.array, mx.array, mx.array]:
    """quantize_row_q4_1_ref (nmax 15, clamped) / q5_1_ref (nmax 31, ``(uint8_t)`` cast only)."""
    mn, mxv = _first_min_max(x)  # (n,), (n,)
    d = (mxv - mn) / float(nmax)
    v = (x - mn[:, None]) * inverse(d)[:, None]
    v = v + 0.5
    q = _codes(v, nmax) if clamp else _c_int8(v).astype(mx.uint8)
    return d, mn, q


def row_sigma2(x: mx.array) -> mx.array:
    """``sum_x2 / n_per_row`` per row, ``sum_x2 += x[j]*x[j]`` strictly left to right in float32.

    (rows, cols) -> (rows,). One op per column (MLX reductions have no specified order).
    """
    return seq_sum(x * x, axis=1) / float(x.shape[1])


def _weighted(
    cls: type[Codec], x: mx.array, imatrix: mx.array, encode: Callable[[mx.array, mx.array], mx.array]
) -> mx.array:
    """The ``_impl`` quantizers' shape: per-row ``sigma2`` once, then row chunks of
    ``encode(x_blocks (n, 32), weights (n, 32))`` with ``qw[j] * sqrtf(sigma2 + x[j]*x[j])``."""
    rows, cols = x.shape
    sigma2 = row_sigma2(x)
    mx.eval(sigma2)
    qw = imatrix.astype(F32)[None, :]

    def chunk(r0: int, r1: int) -> mx.array:
        xc = x[r0:r1]
        w = qw * mx.sqrt(sigma2[r0:r1, None] + xc * xc)  # (r, cols)
        return encode(xc.reshape(-1, QK), w.reshape(-1, QK)).reshape(r1 - r0, cls.qtype.row_bytes(cols))

    return in_chunks(chunk, rows, cols, CHUNK_WEIGHTS)


# -- the codecs ---------------------------------------------------------------------------------
class Q4_0(ChunkedCodec, qtype="Q4_0", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        d, q = _encode_symmetric(x, 8)
        return _assemble(d, q[:, :16] | (q[:, 16:] << 4))  # (n, 18); C does not mask q[j]

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        d = fp16_from_bytes(blocks[:, 0:2])
        q = _unpack_nibbles(blocks[:, 2:18]).astype(mx.int32) - 8  # (n, 32) -8..7
        return q.astype(F32) * d[:, None]

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        def enc(xb: mx.array, w: mx.array) -> mx.array:
            d, q = make_qx_quants(xb, 8, 1, w)  # q = 8 + l
            return _assemble(d, pack_halves(q))

        return _weighted(cls, x, imatrix, enc)


class Q5_0(ChunkedCodec, qtype="Q5_0", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        d, q = _encode_symmetric(x, 16)
        return _assemble(d, pack_halves(q), qh=_pack_qh(q))  # (n, 22)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        d = fp16_from_bytes(blocks[:, 0:2])
        q = _unpack_nibbles(blocks[:, 6:22]) | _unpack_qh(blocks[:, 2:6])  # (n, 32) 0..31
        return (q.astype(mx.int32) - 16).astype(F32) * d[:, None]

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        def enc(xb: mx.array, w: mx.array) -> mx.array:
            d, q = make_qx_quants(xb, 16, 1, w)  # q = 16 + l
            return _assemble(d, pack_halves(q), qh=_pack_qh(q))

        return _weighted(cls, x, imatrix, enc)


class Q4_1(ChunkedCodec, qtype="Q4_1", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        d, mn, q = _encode_asymmetric(x, 15, clamp=True)
        return _assemble(d, q[:, :16] | (q[:, 16:] << 4), m=mn)  # (n, 20); C does not mask q[j]

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        d = fp16_from_bytes(blocks[:, 0:2])
        m = fp16_from_bytes(blocks[:, 2:4])
        q = _unpack_nibbles(blocks[:, 4:20]).astype(F32)  # (n, 32) 0..15
        return q * d[:, None] + m[:, None]  # two ops, two roundings (C without FMA)

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        def enc(xb: mx.array, w: mx.array) -> mx.array:
            d, the_min, q = make_qkx3_quants(xb, w, 15, _RMIN, _RDELTA, _NSTEP, False)
            return _assemble(d, pack_halves(q), m=-the_min)

        return _weighted(cls, x, imatrix, enc)


class Q5_1(ChunkedCodec, qtype="Q5_1", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        d, mn, q = _encode_asymmetric(x, 31, clamp=False)
        return _assemble(d, pack_halves(q), m=mn, qh=_pack_qh(q))  # (n, 24)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        d = fp16_from_bytes(blocks[:, 0:2])
        m = fp16_from_bytes(blocks[:, 2:4])
        q = (_unpack_nibbles(blocks[:, 8:24]) | _unpack_qh(blocks[:, 4:8])).astype(F32)  # 0..31
        return q * d[:, None] + m[:, None]

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        def enc(xb: mx.array, w: mx.array) -> mx.array:
            d, the_min, q = make_qkx3_quants(xb, w, 31, _RMIN, _RDELTA, _NSTEP, False)
            return _assemble(d, pack_halves(q), m=-the_min, qh=_pack_qh(q))

        return _weighted(cls, x, imatrix, enc)


class Q8_0(ChunkedCodec, qtype="Q8_0", backend="mlx"):
    """Q8_0 ignores an importance matrix (ggml's ``quantize_q8_0`` does too)."""

    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        d = abs_max(x) / 127.0  # (n,) >= +0
        v = x * inverse(d)[:, None]  # (n, 32) x*id
        q = _c_int8(_roundf(v)).view(mx.uint8)  # (int8_t)roundf(x*id)
        return _assemble(d, q)  # (n, 34)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        d = fp16_from_bytes(blocks[:, 0:2])
        return blocks[:, 2:34].view(mx.int8).astype(F32) * d[:, None]
