"""Ternary types on MLX arrays: TQ1_0 and TQ2_0 (twin of ``mlxquant/quant/numpy/ternary.py``).

One fp16 scale ``d = max|x|`` per 256 weights and a trit ``lroundf(x * (1/d)) + 1`` in {0, 1, 2}
per weight; the layouts (see the NumPy module's docstring)::

    TQ1_0 (54 B)  | qs[0:32] 5 trits each | qs[32:48] 5 trits each | qh[0:4] 4 trits | d:f16 |
    TQ2_0 (66 B)  | qs[0:64] 4 trits each (2 bits)                                   | d:f16 |

All integer work (base-3 packing, ceiling division, C's uint8 wrap-around when decoding) is done
in uint32 with explicit masks, so no backend's narrow-integer rules matter.
"""

from __future__ import annotations

import mlx.core as mx

from .codec import ChunkedCodec
from .numeric import abs_max, fp16_bytes, fp16_from_bytes, inverse

F32 = mx.float32
U32 = mx.uint32
_POW3_5 = mx.array([81, 27, 9, 3, 1], dtype=U32)[:, None]  # trit n of 5, n = 0 most significant
_POW3_DEC = mx.array([1, 3, 9, 27, 81], dtype=U32)[:, None]  # pow3[n] of dequantize_row_tq1_0
_TQ2_SHIFT = mx.array([0, 2, 4, 6], dtype=mx.uint8)[:, None]


def _scale_and_trits(x: mx.array) -> tuple[mx.array, mx.array]:
    """(n, 256) float32 -> (fp16 scale bytes (n, 2), trits (n, 256) uint32 in {0, 1, 2}).

    ``|x * id| <= 1`` up to rounding, so ``lroundf`` is 1 for ``v >= 0.5`` and -1 for
    ``v <= -0.5``. Where ``id`` overflowed (``d`` below 2**-128) every ``v`` is ±inf or NaN and
    glibc's ``lroundf`` gives LONG_MIN, whose low 32 bits plus one make the trit 1.
    """
    d = abs_max(x)  # (n,)
    inv = inverse(d)
    v = x * inv[:, None]  # (n, 256)
    trits = 1 + (v >= 0.5).astype(U32) - (v <= -0.5).astype(U32)
    trits = mx.where(mx.isinf(inv)[:, None], mx.array(1, U32), trits)
    return fp16_bytes(d), trits


def _pack_base3(t: mx.array, extra: bool = False) -> mx.array:
    """(n, k, m) trits along axis 1 (first most significant) -> (n, m) uint8 bytes.

    The base-3 number (at most 242) is times 3 for ``extra`` (qh); a byte stores
    ``ceil(q * 256 / 243)``. Integer sums are exact in any order.
    """
    k = t.shape[1]
    q = mx.sum(t * _POW3_5[5 - k :], axis=1)  # (n, m) uint32
    if extra:
        q = q * 3
    return ((q * 256 + 242) // 243).astype(mx.uint8)


def _unpack_base3(b: mx.array, n_trits: int) -> mx.array:
    """(n, m) uint8 bytes -> (n, n_trits, m) trits minus one (-1, 0, 1) as float32."""
    q = (b.astype(U32)[:, None, :] * _POW3_DEC[:n_trits]) & 0xFF  # C's uint8 wrap
    return ((q * 3) >> 8).astype(mx.int32).astype(F32) - 1.0


class TQ1_0(ChunkedCodec, qtype="TQ1_0", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        n = x.shape[0]
        dh, t = _scale_and_trits(x)  # (n, 2), (n, 256)
        return mx.concatenate(
            [
                _pack_base3(t[:, 0:160].reshape(n, 5, 32)),
                _pack_base3(t[:, 160:240].reshape(n, 5, 16)),
                _pack_base3(t[:, 240:256].reshape(n, 4, 4), extra=True),
                dh,
            ],
            axis=1,
        )  # (n, 54)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        n = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, 52:54])  # (n,)
        t = mx.concatenate(
            [
                _unpack_base3(blocks[:, 0:32], 5).reshape(n, 160),
                _unpack_base3(blocks[:, 32:48], 5).reshape(n, 80),
                _unpack_base3(blocks[:, 48:52], 4).reshape(n, 16),
            ],
            axis=1,
        )  # (n, 256) -1..1, exact
        return t * d[:, None]


class TQ2_0(ChunkedCodec, qtype="TQ2_0", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        n = x.shape[0]
        dh, t = _scale_and_trits(x)
        t = t.astype(mx.uint8).reshape(n, 2, 4, 32)  # (n, h, l, m)
        qs = t[:, :, 0] | (t[:, :, 1] << 2) | (t[:, :, 2] << 4) | (t[:, :, 3] << 6)  # (n, 2, 32)
        return mx.concatenate([qs.reshape(n, 64), dh], axis=1)  # (n, 66)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        n = blocks.shape[0]
        d = fp16_from_bytes(blocks[:, 64:66])
        qs = blocks[:, 0:64].reshape(n, 2, 1, 32)
        t = ((qs >> _TQ2_SHIFT) & 3).astype(mx.int32).astype(F32) - 1.0  # (n, 2, 4, 32)
        return t.reshape(n, 256) * d[:, None]
