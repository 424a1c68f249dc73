"""4-bit float (E2M1) types on MLX arrays: MXFP4 and NVFP4 (twin of ``mlxquant/quant/numpy/fp4.py``).

Same layouts and the same code choice as the NumPy reference (see its docstring)::

    MXFP4 (17 B / 32 w)   | e:E8M0 | qs[16] |   d = 2**(e - 128); j low nibble, j + 16 high
    NVFP4 (36 B / 64 w)   | d[4]:UE4M3 | qs[32] |   sub-block s: qs[8s + j] holds j and j + 8

Codes: ggml's ``best_index_mxfp4`` (first index of the smallest ``|kvalues[i]*d - x|``) equals
"how many midpoints ``t*d`` (t = 0.5, 1.5, 2.5, 3.5, 5, 7, 10; exact products) ``|x|`` strictly
exceeds", plus 8 for a negative ``x`` with a non-zero code, and 0 when ``d == 0``. An NVFP4 scale
saturated at the UE4M3 maximum breaks that argument; those sub-blocks take ggml's 16-way search
as written (:func:`fp4_codes_direct`).

MXFP4's exponent ``floorf(log2f(amax))`` is the float exponent of ``amax`` plus one when the
float32 ``log2`` rounds up to the next integer (``amax`` just below a power of two); the NumPy
reference decides that with a float64 ``log2`` rounded to float32. MLX has no float64 on GPUs,
so the cut-offs are tabulated once at import, with that same NumPy rule, one per binade.

Not verified on Metal (no Apple GPU here): MXFP4 scales for ``e < 2`` and the midpoints they
give are subnormal floats; a backend flushing subnormals to zero would change those blocks.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..numpy import fp4 as _np_fp4
from .codec import ChunkedCodec
from .numeric import abs_max, c_int32, pack_halves

F32 = mx.float32
KVALUES_MXFP4 = mx.array(_np_fp4.KVALUES_MXFP4.astype(np.float32))  # (16,) float32
_MIDPOINTS = mx.array(_np_fp4._MIDPOINTS)  # (7,)
E8M0_HALF = mx.array(_np_fp4.E8M0_HALF)  # (256,) 2**(e - 128)
UE4M3_HALF = mx.array(_np_fp4.UE4M3_HALF)  # (256,) half the UE4M3 value
_LO_VALUES = mx.array(_np_fp4._LO_VALUES)  # (256,) value of a byte's low nibble
_HI_VALUES = mx.array(_np_fp4._HI_VALUES)  # (256,) value of its high nibble
_TWO64 = 18446744073709551616.0  # 2**64, exact in float32


def _log2_cutoffs() -> np.ndarray:
    """(277,) float32: for binade E = -149..127, the smallest ``a`` in ``[2**E, 2**(E+1))`` whose
    ``floor(float32(log2(a)))`` is E + 1 (inf when there is none), by bisection over the bit
    patterns with the NumPy reference's own rule (:func:`mlxquant.quant.numpy.fp4.mxfp4_exponent`)."""
    e = np.arange(-149, 128)
    lo = np.ldexp(np.float32(1), e).astype(np.float32).view(np.uint32).astype(np.int64)
    hi = np.where(e < 127, lo + np.where(e < -126, lo, 1 << 23), 0x7F800000)  # next power (bits)

    def rounds_up(bits: np.ndarray) -> np.ndarray:
        a = bits.astype(np.uint32).view(np.float32).astype(np.float64)
        return np.floor(np.log2(a).astype(np.float32)) >= e + 1

    left, right = lo.copy(), hi.copy()  # answer in [left, right]; right = none
    while (left < right).any():
        mid = (left + right) // 2
        up = rounds_up(mid)
        right = np.where(up & (left < right), mid, right)
        left = np.where(~up & (left < right), mid + 1, left)
    cut = right.astype(np.uint32).view(np.float32).copy()
    cut[right == hi] = np.inf
    return cut


_LOG2_CUTOFF = mx.array(_log2_cutoffs())


def mxfp4_exponent(amax: mx.array) -> mx.array:
    """(n,) float32 block max -> E8M0 ``(uint8)(floorf(log2f(amax)) - 2 + 127)``, 0 if amax = 0.

    Exponents below -125 wrap (through int32, as x86's ``cvttss2si``) as they do in ggml.
    """
    sub = amax < 1.1754943508222875e-38  # FLT_MIN: scale subnormals into the normal range
    a = mx.where(sub, amax * _TWO64, amax)
    e = ((a.view(mx.uint32) >> 23) & 0xFF).astype(mx.int32) - 127
    e = e - mx.where(sub, 64, 0)  # floor(log2(amax)) exactly
    cut = mx.take(_LOG2_CUTOFF, mx.clip(e + 149, 0, 276))  # (amax = 0 gives e = -191: masked below)
    e = e + (amax >= cut).astype(mx.int32)  # the float32 log2 rounded up to the next integer
    e = mx.where(amax > 0, e - 2 + 127, 0)
    return (e & 0xFF).astype(mx.uint8)


def _signed(code: mx.array, x: mx.array) -> mx.array:
    """Negative weights with a non-zero magnitude code take the code + 8."""
    neg = ((x < 0) & (code > 0)).astype(mx.uint8)
    return code | (neg << 3)


def fp4_codes(x: mx.array, d: mx.array) -> mx.array:
    """``best_index_mxfp4(x, d)`` for (m, k) float32 ``x`` and (m,) scales -> (m, k) uint8 codes."""
    thr = d[:, None] * _MIDPOINTS[None, :]  # (m, 7) exact products
    above = mx.abs(x)[:, :, None] > thr[:, None, :]  # (m, k, 7)
    code = mx.sum(above.astype(mx.uint8), axis=-1).astype(mx.uint8)  # integer count: exact
    code = mx.where((d == 0)[:, None], mx.array(0, mx.uint8), code)  # every error is |x|: index 0
    return _signed(code, x)


def fp4_codes_direct(x: mx.array, d: mx.array) -> mx.array:
    """ggml's ``best_index_mxfp4`` as written: (m, k) float32 and (m,) scales -> (m, k) uint8."""
    dd = d[:, None]
    best = mx.abs(KVALUES_MXFP4[0] * dd - x)
    code = mx.zeros(x.shape, dtype=mx.uint8)
    for i in range(1, 16):
        err = mx.abs(KVALUES_MXFP4[i] * dd - x)  # product, then difference: no FMA
        better = err < best
        code = mx.where(better, mx.array(i, mx.uint8), code)
        best = mx.where(better, err, best)
    return code


def _decode_halves(qs: mx.array, d: mx.array) -> mx.array:
    """(m, h) packed bytes and (m, 1) scales -> (m, 2h) float32 ``kvalues[code] * d``."""
    idx = qs.astype(mx.uint32)
    return mx.concatenate([mx.take(_LO_VALUES, idx) * d, mx.take(_HI_VALUES, idx) * d], axis=1)


class MXFP4(ChunkedCodec, qtype="MXFP4", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        e = mxfp4_exponent(abs_max(x))  # (n,) uint8
        d = mx.take(E8M0_HALF, e.astype(mx.uint32))  # (n,) powers of two
        return mx.concatenate([e[:, None], pack_halves(fp4_codes(x, d))], axis=1)  # (n, 17)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        d = mx.take(E8M0_HALF, blocks[:, 0].astype(mx.uint32))  # (n,)
        return _decode_halves(blocks[:, 1:17], d[:, None])


def ue4m3_encode(x: mx.array) -> mx.array:
    """ggml's ``ggml_fp32_to_ue4m3`` on a float32 array -> uint8 (rounding: add the next bit)."""
    x = mx.minimum(x, 448.0)
    bits = x.view(mx.uint32)
    biased = ((bits >> 23) & 0xFF).astype(mx.int32)
    exp = biased - 127 + 7
    man = ((bits >> 20) & 7).astype(mx.int32) + ((bits >> 19) & 1).astype(mx.int32)
    carry = man > 7
    man = mx.where(carry, 0, man)
    exp = exp + carry.astype(mx.int32)
    out = mx.where(exp >= 15, 0x7E, (mx.clip(exp, 0, 15) << 3) | man)
    # subnormal range: man = (int)(x * 512 + 0.5), at most 7, 0 below 1
    sub = c_int32(x * 512.0 + 0.5)
    sub = mx.where(sub < 1, 0, mx.minimum(sub, 7))
    out = mx.where(biased - 120 <= 0, sub, out)
    out = mx.where(x > 0, out, 0)
    return out.astype(mx.uint8)


class NVFP4(ChunkedCodec, qtype="NVFP4", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        n = x.shape[0]
        xs = x.reshape(n * 4, 16)  # (n * 4 sub-blocks, 16)
        s = abs_max(xs) / 6.0  # (n * 4,)
        ue = ue4m3_encode(s)  # (n * 4,) uint8
        d = mx.take(UE4M3_HALF, ue.astype(mx.uint32))  # (n * 4,) float32
        codes = fp4_codes(xs, d)
        sat = s > 448.0  # scale clamped: |x|/d unbounded, the midpoint argument fails
        if mx.any(sat).item():  # rare (|x| > 2688): one sync per chunk to skip the slow search
            codes = mx.where(sat[:, None], fp4_codes_direct(xs, d), codes)
        qs = pack_halves(codes).reshape(n, 32)
        return mx.concatenate([ue.reshape(n, 4), qs], axis=1)  # (n, 36)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        n = blocks.shape[0]
        d = mx.take(UE4M3_HALF, blocks[:, 0:4].astype(mx.uint32)).reshape(-1, 1)  # (n * 4, 1)
        return _decode_halves(blocks[:, 4:36].reshape(n * 4, 8), d).reshape(n, 64)
