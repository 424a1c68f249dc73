"""GGUF block layouts and the small bit-unpacking helpers the dot products share.

Layouts (ggml-common.h; byte offsets inside one block; ``lo``/``hi``: low/high nibble)::

    Q4_0   d:f16 @0, qs[16] @2              w[j] = (lo(qs[j]) - 8)·d, w[j+16] = (hi(qs[j]) - 8)·d
    Q4_1   d:f16 @0, m:f16 @2, qs[16] @4    w = q·d + m
    Q5_0   d:f16 @0, qh:u32 @2, qs[16] @6   5th bit of weight j = bit j of qh; w = (q - 16)·d
    Q5_1   d:f16, m:f16, qh:u32, qs[16]     w = q·d + m
    Q8_0   d:f16 @0, qs[32]:i8 @2           w = q·d
    IQ4_NL d:f16 @0, qs[16] @2              w = d·kvalues_iq4nl[nibble]
    MXFP4  e:E8M0 @0, qs[16] @1             w = kvalues_fp4[nibble]·2^(e-128)
    Q2_K   scales[16] @0 (lo: scale, hi: min of 16 weights), qs[64] @16, d:f16 @80, dmin:f16 @82
    Q3_K   hmask[32] @0, qs[64] @32, scales[12] @96 (16 x 6 bits, minus 32), d:f16 @108
    Q4_K   d:f16 @0, dmin:f16 @2, scales[12] @4 (8 x 6-bit scale and min per 32), qs[128] @16
    Q5_K   as Q4_K, qh[32] @16, qs[128] @48
    Q6_K   ql[128] @0, qh[64] @128, scales[16]:i8 @192, d:f16 @208
    IQ4_XS d:f16 @0, scales_h:u16 @2, scales_l[4] @4 (8 x 6 bits, minus 32), qs[128] @8
    TQ1_0  qs[48] @0 (5 trits a byte), qh[4] @48 (4 trits a byte), d:f16 @52
    TQ2_0  qs[64] @0 (4 x 2 bits a byte, value - 1), d:f16 @64

The order of weights inside a block is that of ggml's ``dequantize_row_*`` (ggml-quants.c).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ...quant.jit.numeric import bits_f32

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.float32)
KVALUES_FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)
POW3 = np.array([1, 3, 9, 27, 81, 243], dtype=np.int32)


@intrinsic
def half_to_f32(typingctx, h):
    """IEEE half bits (the low 16 of an integer) -> float32, exactly (LLVM ``fpext half``: one
    ``vcvtph2ps`` with F16C, vectorizable; ggml's GGML_FP16_TO_FP32 gives the same value)."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        v = builder.trunc(v, ir.IntType(16)) if h.bitwidth > 16 else builder.zext(v, ir.IntType(16)) \
            if h.bitwidth < 16 else v
        return builder.fpext(builder.bitcast(v, ir.HalfType()), ir.FloatType())

    return types.float32(h), codegen


@njit(inline="always")
def f16_at(w, p):
    """The float32 value of the little-endian half at ``w[p:p+2]``."""
    return half_to_f32(np.uint16(w[p]) | (np.uint16(w[p + 1]) << 8))


@njit(inline="always")
def e8m0_half(e):
    """ggml_e8m0_to_fp32_half: 2^(e - 128) as float32 (subnormal for e < 2)."""
    if e < 2:
        return bits_f32(np.int64(0x00200000) << e)
    return bits_f32((np.int64(e) - 1) << 23)


# kvalues_iq4nl[q] = rint(p(q - 7.5)) for the degree-4 least-squares polynomial p below (largest
# |p - kvalue| 0.48 over the 16 codes): 6 vector float ops per 8 codes where a table lookup is a
# gather (slow here) or scalar loads; the IQ4 kernels ran 1.4x faster with it.
IQ4NL_POLY = (np.float32(0.0013247202150523663), np.float32(0.08095842599868774),
              np.float32(-0.12571197748184204), np.float32(11.431296348571777),
              np.float32(-4.274739742279053))


@njit(inline="always")
def iq4nl_value(q):
    """``KVALUES_IQ4NL[q]`` (``0 <= q < 16``) as float32, computed without a table lookup."""
    c4, c3, c2, c1, c0 = IQ4NL_POLY
    t = np.float32(q) - np.float32(7.5)
    return np.rint((((c4 * t + c3) * t + c2) * t + c1) * t + c0)


@njit(inline="always")
def trit(byte, n):
    """The ``n``-th base-3 digit of a TQ1_0 byte minus one, as ggml extracts it:
    ``((u8)(q·3^n)·3) >> 8``."""
    q = (np.int32(byte) * POW3[n]) & 0xFF
    return ((q * 3) >> 8) - 1
