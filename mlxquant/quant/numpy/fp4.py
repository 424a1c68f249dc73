"""4-bit float (E2M1) types: MXFP4 (32 weights, one E8M0 scale) and NVFP4 (64, four UE4M3 scales).

Both store codes into ggml's ``kvalues_mxfp4`` table, which holds twice the E2M1 values
(0, ±1, ±2, ±3, ±4, ±6, ±8, ±12), so ggml's scales are halved to match. The quantizers ignore
the importance matrix and work block by block (``quantize_row_*_ref`` on the whole chunk).

MXFP4 block (17 bytes, 32 weights)::

    byte  0    1 ............ 16
          | e  | qs[0:16]       |     weight j is qs[j] & 0xF, weight j + 16 is qs[j] >> 4
    e: E8M0 exponent, scale d = 2**(e - 128) (``GGML_E8M0_TO_FP32_HALF``)

NVFP4 block (36 bytes, 64 weights = 4 sub-blocks of 16)::

    byte  0 .. 3   4 ............ 35
          | d[0:4] | qs[0:32]       |  sub-block s: weight j is qs[8s + j] & 0xF, j + 8 is >> 4
    d[s]: UE4M3 scale (4-bit exponent, bias 7, 3-bit mantissa), halved by ggml_ue4m3_to_fp32

Choosing the code (ggml's ``best_index_mxfp4``: the first index of the smallest
``fabsf(kvalues[i]*d - x)``). Near a midpoint between two neighbouring values every quantity
involved is exact in float32, and elsewhere rounding cannot create a tie, so the choice equals
"nearest value, ties toward the smaller magnitude": the magnitude code is the number of midpoints
``t*d`` (t = 0.5, 1.5, 2.5, 3.5, 5, 7, 10; each product exact) that ``|x|`` strictly exceeds, and
negative ``x`` with a non-zero code takes the code + 8. With ``d == 0`` every error is ``|x|``
and index 0 wins. MXFP4's ``d`` is a power of two, so ``|x| * (1/d)`` is exact and compares
with the constant midpoints. The argument needs ``|x|/d`` bounded (below ~16 here); only an
NVFP4 scale saturated at the UE4M3 maximum breaks it (huge ``x`` make all errors round equal),
and those sub-blocks take :func:`fp4_codes_direct`, ggml's 16-way search as written.
"""

from __future__ import annotations

import numpy as np

from ..codec import Codec
from ..buffers import output
from .numeric import abs_max, field, pack_halves, split_nibbles

_F32 = np.float32
KVALUES_MXFP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)
_KV_F32 = KVALUES_MXFP4.astype(_F32)
_MIDPOINTS = np.array([0.5, 1.5, 2.5, 3.5, 5.0, 7.0, 10.0], dtype=_F32)


def _e8m0_half_table() -> np.ndarray:
    """(256,) float32: ``ggml_e8m0_to_fp32_half(e)`` = 2**(e - 128), denormal for e < 2."""
    e = np.arange(256, dtype=np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - 1) << 23).astype(np.uint32)
    return bits.view(_F32)


def _ue4m3_table() -> np.ndarray:
    """(256,) float32: ``ggml_ue4m3_to_fp32(u)``, half the UE4M3 value; 0 for 0 and 0x7F."""
    u = np.arange(256)
    exp = (u >> 3) & 0xF
    man = (u & 7).astype(np.float64)
    raw = np.where(exp == 0, man * 2.0**-9, (1.0 + man / 8.0) * 2.0 ** (exp - 7))
    raw[(u == 0) | (u == 0x7F)] = 0.0
    return (raw * 0.5).astype(_F32)                            # every value is exact in float32


E8M0_HALF = _e8m0_half_table()
# 1/E8M0_HALF[e] = 2**(128 - e), exact; e = 0 (2**128) has no float32 and is handled apart.
_INV_E8M0_HALF = np.zeros(256, dtype=_F32)
_INV_E8M0_HALF[1:255] = (np.arange(254, 0, -1, dtype=np.uint32) << 23).view(_F32)
_INV_E8M0_HALF[255] = np.uint32(0x00400000).view(_F32)     # 2**-127
UE4M3_HALF = _ue4m3_table()


def _count_above(a: np.ndarray, thresholds) -> np.ndarray:
    """Magnitude codes: how many thresholds each ``a`` strictly exceeds, as uint8."""
    code = np.zeros(a.shape, dtype=np.uint8)
    for t in thresholds:
        code += (a > t).view(np.uint8)
    return code


def _signed(code: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Negative weights with a non-zero magnitude code take the code + 8 (in place)."""
    code |= ((x < 0) & (code > 0)).view(np.uint8) << 3
    return code


def fp4_codes(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``best_index_mxfp4(x, d)`` for (m, k) float32 ``x`` and (m,) scales -> (m, k) uint8 codes.

    Position-major inside, so that each comparison runs along m with a per-column threshold.
    """
    xt = np.ascontiguousarray(x.T)                             # (k, m)
    with np.errstate(over="ignore"):
        thr = _MIDPOINTS[:, None] * d[None]                    # (7, m) exact products
    code = _count_above(np.abs(xt), thr)
    code[:, d == 0] = 0                                        # every error is |x|: index 0
    return np.ascontiguousarray(_signed(code, xt).T)


def mxfp4_codes(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """MXFP4 codes of (n, 32) float32 blocks with E8M0 bytes ``e``: (n, 32) uint8.

    ``d = 2**(e - 128)`` is a power of two, so ``|x| * (1/d)`` is exact (or far below 0.5 when
    it underflows) and compares with the constant midpoints. ``1/d`` overflows for e = 0 only
    (all-zero blocks, or a block max in [2**-125, 2**-124)); those blocks use the thresholds.
    """
    a = np.abs(x)
    a *= _INV_E8M0_HALF[e][:, None]
    code = _signed(_count_above(a, _MIDPOINTS), x)
    z = e == 0
    if z.any():
        code[z] = fp4_codes(x[z], E8M0_HALF[e[z]])
    return code


def fp4_codes_direct(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """ggml's ``best_index_mxfp4`` as written: (n, k) float32 and (n,) scales -> (n, k) uint8."""
    dd = d[:, None]
    best = np.abs(_KV_F32[0] * dd - x)
    code = np.zeros(x.shape, dtype=np.uint8)
    for i in range(1, 16):
        err = np.abs(_KV_F32[i] * dd - x)
        better = err < best
        code[better] = i
        best = np.where(better, err, best)
    return code


def mxfp4_exponent(amax: np.ndarray) -> np.ndarray:
    """(n,) float32 block max -> E8M0 ``(uint8)(floorf(log2f(amax)) - 2 + 127)``, 0 if amax = 0.

    ``log2f`` is evaluated in float64 and rounded to float32 (correct rounding), which is what
    decides the floor just below a power of two. The cast goes through int32 like x86's
    ``cvttss2si``, so exponents below -125 wrap as they do in ggml.
    """
    with np.errstate(divide="ignore"):
        lg = np.log2(amax.astype(np.float64)).astype(_F32)
    e = (np.floor(lg) - _F32(2) + _F32(127))
    e = np.where(amax > 0, e, _F32(0)).astype(np.int32)
    return (e & 0xFF).astype(np.uint8)


_LO_VALUES = _KV_F32[np.arange(256) & 0xF]                    # value of a byte's low nibble
_HI_VALUES = _KV_F32[np.arange(256) >> 4]                      # (used by the MLX twin)


def _decode_halves(qs: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(m, h) packed bytes and (m, 1) scales -> (m, 2h) float32 ``kvalues[code] * d``: codes
    unpacked with word operations, values from the int8 table, one multiply."""
    v = np.take(KVALUES_MXFP4, split_nibbles(qs))               # (m, 2h) int8
    with np.errstate(over="ignore"):
        return np.multiply(v, d, out=output(v.shape, _F32))


class MXFP4(Codec, qtype="MXFP4"):
    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        e = mxfp4_exponent(abs_max(x))                         # (n,) uint8
        out = np.empty((n, 17), dtype=np.uint8)
        out[:, 0] = e
        out[:, 1:17] = pack_halves(mxfp4_codes(x, e))
        return out

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(blocks)
        d = E8M0_HALF[field(b, 0, 1)]                          # (n, 1)
        return _decode_halves(field(b, 1, 17), d)


def ue4m3_encode(x: np.ndarray) -> np.ndarray:
    """ggml's ``ggml_fp32_to_ue4m3`` on a float32 array -> uint8 (rounding: add the next bit)."""
    x = np.minimum(x.astype(_F32), _F32(448))
    bits = x.view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.int32) - 127 + 7
    man = ((bits >> 20) & 7).astype(np.int32) + ((bits >> 19) & 1).astype(np.int32)
    carry = man > 7
    man = np.where(carry, 0, man)
    exp = exp + carry
    out = np.where(exp >= 15, 0x7E, (np.clip(exp, 0, 15) << 3) | man)
    # subnormal range: man = (int)(x * 512 + 0.5), at most 7, 0 below 1
    sub = (x * _F32(512) + _F32(0.5)).astype(np.int32)
    sub = np.where(sub < 1, 0, np.minimum(sub, 7))
    first_exp = ((bits >> 23) & 0xFF).astype(np.int32) - 120
    out = np.where(first_exp <= 0, sub, out)
    out = np.where(x > 0, out, 0)
    return out.astype(np.uint8)


class NVFP4(Codec, qtype="NVFP4"):
    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        xs = x.reshape(n, 4, 16)                               # (n, sub-block, 16)
        amax = abs_max(xs)                                     # (n, 4)
        ue = ue4m3_encode(amax / _F32(6))                      # (n, 4) uint8
        d = UE4M3_HALF[ue]                                     # (n, 4) float32
        codes = fp4_codes(x.reshape(n * 4, 16), d.reshape(-1)).reshape(n, 4, 16)
        sat = amax / _F32(6) > _F32(448)                       # scale clamped: |x|/d unbounded
        if sat.any():
            codes[sat] = fp4_codes_direct(xs[sat], d[sat])
        out = np.empty((n, 36), dtype=np.uint8)
        out[:, 0:4] = ue
        out[:, 4:36] = pack_halves(codes).reshape(n, 32)
        return out

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(blocks)
        n = b.shape[0]
        d = UE4M3_HALF[field(b, 0, 4)]                         # (n, 4)
        out = _decode_halves(field(b, 4, 36).reshape(n * 4, 8), d.reshape(-1, 1))
        return out.reshape(n, 64)
