"""Ternary types for BitNet b1.58 / TriLM weights: TQ1_0 (1.6875 bpw) and TQ2_0 (2.0625 bpw).

Both store one fp16 scale per 256 weights, ``d = max|x|``, and a trit ``round(x/d) + 1`` in
{0, 1, 2} per weight (``lroundf``: halves away from zero). They differ only in packing. ggml's
``quantize_tq*_0`` ignore the importance matrix and call the ``_ref`` quantizer on the whole
chunk, so :meth:`Codec.encode_blocks` is the only quantizer needed.

TQ1_0 block (54 bytes, 256 weights)::

    byte  0 ........ 31 32 ...... 47 48 .. 51 52  53
          | qs[0:32]    | qs[32:48]  | qh[0:4] | d:f16 |
    qs[m]      (m < 32)  holds x[m + 32n],        n = 0..4   (5 trits, n = 0 most significant)
    qs[32+m]   (m < 16)  holds x[160 + m + 16n],  n = 0..4
    qh[j]      (j < 4)   holds x[240 + j + 4n],   n = 0..3   (4 trits, then * 3)
    a byte with trits t0..t4 (t0 most significant) stores ceil(256 * sum(t_n 3^(4-n)) / 243);
    trit n comes back as ((uint8)(byte * 3^n) * 3) >> 8.

TQ2_0 block (66 bytes, 256 weights)::

    byte  0 ............... 63 64  65
          | qs[0:64]           | d:f16 |
    qs[32h + m], bits 2l..2l+1 (h < 2, m < 32, l < 4) = trit of x[128h + 32l + m]
"""

from __future__ import annotations

import numpy as np

from ..codec import Codec
from ..buffers import output
from .numeric import abs_max, bit_planes, f16_field, field, fp16_bytes, interleave, inverse

_F32 = np.float32
_CEIL_TAB = ((np.arange(256) * 256 + 242) // 243).astype(np.uint8)   # only 0..242 occur


def _scale_and_trits(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 256) float32 -> (fp16 scale bytes (n, 2), trits (n, 256) uint8 in {0, 1, 2}).

    ``xi = lroundf(x * id) + 1`` with ``id = 1/d`` (0 when ``d == 0``). ``|x * id| <= 1`` up to
    rounding, so ``lroundf`` is 1 for ``v >= 0.5`` and -1 for ``v <= -0.5``. Where ``id``
    overflowed (``d`` below 2**-128) every ``v`` is ±inf or NaN, and glibc's ``lroundf`` gives
    LONG_MIN, whose low 32 bits plus one make the trit 1: the whole block is 1s.
    """
    d = abs_max(x)                                             # (n,) amax
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = inverse(d)
        v = x * inv[:, None]                                   # (n, 256) float32
        trits = (v >= _F32(0.5)).view(np.uint8) + np.uint8(1)
        trits -= (v <= _F32(-0.5)).view(np.uint8)
        dh = fp16_bytes(d)
    trits[np.isinf(inv)] = 1
    return dh, trits


def _pack_base3(t: np.ndarray, extra: bool = False) -> np.ndarray:
    """(n, k, m) trits along axis 1 (first most significant) -> (n, m) uint8 bytes.

    The base-3 number (at most 242, uint8 as in C) is times 3 for ``extra`` (qh), and a byte
    stores ``ceil(q * 256 / 243)``.
    """
    q = t[:, 0].copy()
    for i in range(1, t.shape[1]):
        q *= np.uint8(3)
        q += t[:, i]
    if extra:
        q *= np.uint8(3)
    return _CEIL_TAB[q]


def _trits(b: np.ndarray, n_trits: int) -> np.ndarray:
    """(n, m) uint8 bytes -> (n_trits, n, m) trits (0, 1, 2), trit k first.

    ggml's ``((uint16_t)(uint8_t)(byte * 3^k) * 3) >> 8`` is 1 for a product of 86..170 and 2
    from 171: two byte comparisons, with the product wrapping in uint8 as in C.
    """
    pow3 = np.array([1, 3, 9, 27, 81][:n_trits], dtype=np.uint8).reshape(-1, 1, 1)
    q = np.multiply(b[None], pow3)                              # uint8, wraps mod 256 as in C
    t = np.greater(q, np.uint8(85)).view(np.uint8)
    t += np.greater(q, np.uint8(170)).view(np.uint8)
    return t


def _scaled(codes: np.ndarray, blocks: np.ndarray, at: int) -> np.ndarray:
    """(n, 256) trits and the blocks' fp16 ``d`` at byte ``at`` -> ``(trit - 1) * d``."""
    t = codes.view(np.int8)
    t -= np.int8(1)
    d = f16_field(blocks, at)[:, None]
    with np.errstate(invalid="ignore"):
        return np.multiply(t, d, out=output(t.shape, _F32))


class TQ1_0(Codec, qtype="TQ1_0"):
    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        dh, t = _scale_and_trits(x)                            # (n, 2), (n, 256)
        out = np.empty((n, 54), dtype=np.uint8)
        out[:, 0:32] = _pack_base3(t[:, 0:160].reshape(n, 5, 32))
        out[:, 32:48] = _pack_base3(t[:, 160:240].reshape(n, 5, 16))
        out[:, 48:52] = _pack_base3(t[:, 240:256].reshape(n, 4, 4), extra=True)
        out[:, 52:54] = dh
        return out

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(blocks)
        n = b.shape[0]
        t = np.empty((n, 256), dtype=np.uint8)                  # weight order
        interleave(_trits(field(b, 0, 32), 5).view(np.uint64), t[:, 0:160], (1, 0))
        interleave(_trits(field(b, 32, 48), 5).view(np.uint64), t[:, 160:240], (1, 0))
        q = _trits(field(b, 48, 52), 4)                         # (4, n, 4): x[240 + 4k + j]
        t[:, 240:256].view("V4")[...] = np.ascontiguousarray(q).view("V4")[..., 0].T
        return _scaled(t, b, 52)


class TQ2_0(Codec, qtype="TQ2_0"):
    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        dh, t = _scale_and_trits(x)
        t = t.reshape(n, 2, 4, 32)                              # (n, h, l, m)
        qs = t[:, :, 0] | (t[:, :, 1] << 2) | (t[:, :, 2] << 4) | (t[:, :, 3] << 6)
        out = np.empty((n, 66), dtype=np.uint8)
        out[:, 0:64] = qs.reshape(n, 64)
        out[:, 64:66] = dh
        return out

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(blocks)
        n = b.shape[0]
        qs = field(b, 0, 64).view(np.uint64).reshape(n, 2, 4)   # (n, h, 32 bytes)
        planes = bit_planes(qs, (0, 2, 4, 6), 0x0303030303030303)   # (l, n, h, 4)
        t = np.empty((n, 256), dtype=np.uint8)
        interleave(planes, t, (1, 2, 0))                        # weight 128h + 32l + m
        return _scaled(t, b, 64)
