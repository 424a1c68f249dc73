"""Scalar float32 arithmetic for the compiled codecs, bit for bit as ggml's C.

Numba types a Python float literal as float64 and ``float32 op int`` as float64; ggml works in
float32 throughout. Kernels therefore write constants as ``F32(...)`` and convert integer codes
with ``F32(l)`` before they meet a float, and C's ``memcpy`` between float and int is the
:func:`f32_bits` / :func:`bits_f32` pair (LLVM bitcasts). LLVM does not fuse ``a*b + c`` into an
FMA without fast-math flags, which these kernels never set.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

F32 = np.float32
MAGIC = F32(12582912.0)  # 1.5 * 2**23, ggml's nearest_int
GROUP_MAX_EPS = F32(1e-15)

# Options shared by every kernel: no GIL (the API's thread pool runs chunks on all cores), the
# machine code cached on disk, bounds checks off (the API validates every shape first), and
# IEEE division (``1/0`` is inf, as in C; Numba's default model raises ZeroDivisionError).
KERNEL = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@intrinsic
def f32_bits(typingctx, x):
    """The IEEE bits of a float32, as a non-negative int64 (``memcpy(&u32, &f, 4)``)."""
    if not isinstance(x, types.Float) or x.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        i32 = builder.bitcast(args[0], context.get_value_type(types.int32))
        return builder.zext(i32, context.get_value_type(types.int64))

    return types.int64(types.float32), codegen


@intrinsic
def bits_f32(typingctx, x):
    """The float32 whose bits are the low 32 bits of an integer (``memcpy(&f, &u32, 4)``)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        i32 = builder.trunc(v, context.get_value_type(types.int32))
        return builder.bitcast(i32, context.get_value_type(types.float32))

    return types.float32(x), codegen


@njit(inline="always")
def nearest_int(v):
    """ggml's ``nearest_int``: ``(bits(v + 12582912.f) & 0x7fffff) - 0x400000`` for any float32
    (round half to even inside +-2**22; outside it wraps as in C; NaN gives 0)."""
    return (f32_bits(F32(v + MAGIC)) & 0x007FFFFF) - 0x00400000


@njit(inline="always")
def fp16_to_fp32(h):
    """IEEE half bits (int) -> float32, exact for every pattern (ggml_compute_fp16_to_fp32)."""
    w = (np.int64(h) & 0xFFFF) << 16
    sign = w & 0x80000000
    two_w = (w + w) & 0xFFFFFFFF
    normalized = bits_f32((two_w >> 4) + (0xE0 << 23)) * bits_f32(np.int64(0x7800000))
    denormalized = bits_f32((two_w >> 17) | (126 << 23)) - F32(0.5)
    if two_w < (1 << 27):
        return bits_f32(sign | f32_bits(denormalized))
    return bits_f32(sign | f32_bits(normalized))


@njit(inline="always")
def fp32_to_fp16(f):
    """float32 -> IEEE half bits (int64), round to nearest even; ggml_compute_fp32_to_fp16."""
    base = (abs(f) * bits_f32(np.int64(0x77800000))) * bits_f32(np.int64(0x08800000))
    w = f32_bits(f)
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    if bias < 0x71000000:
        bias = 0x71000000
    base = bits_f32((bias >> 1) + 0x07800000) + base
    bits = f32_bits(base)
    nonsign = ((bits >> 13) & 0x00007C00) + (bits & 0x00000FFF)
    if shl1_w > 0xFF000000:
        return (sign >> 16) | 0x7E00
    return (sign >> 16) | nonsign


@njit(inline="always")
def put_u16(o, pos, v):
    """Store the low 16 bits of ``v`` little-endian at ``o[pos:pos+2]`` (uint8 array)."""
    o[pos] = v & 0xFF
    o[pos + 1] = (v >> 8) & 0xFF


@njit(inline="always")
def get_u16(o, pos):
    return np.int64(o[pos]) | (np.int64(o[pos + 1]) << 8)


@njit(inline="always")
def f16_at(o, pos):
    """The float32 value of the little-endian half at ``o[pos:pos+2]``."""
    return fp16_to_fp32(get_u16(o, pos))


@njit(inline="always")
def put_f16(o, pos, f):
    """Round ``f`` to half as ggml does and store it at ``o[pos:pos+2]``; returns the half's
    value as float32 (what ggml reads back with GGML_FP16_TO_FP32)."""
    h = fp32_to_fp16(f)
    put_u16(o, pos, h)
    return fp16_to_fp32(h)


@intrinsic
def nonfinite_i32(typingctx, f):
    """1 when a float32 is NaN or +-inf (exponent bits all ones), else 0: an int32, so that an
    OR over many values vectorizes."""
    if not isinstance(f, types.Float) or f.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        i32 = context.get_value_type(types.int32)
        e = builder.and_(builder.bitcast(args[0], i32), i32(0x7F800000))
        return builder.zext(builder.icmp_unsigned("==", e, i32(0x7F800000)), i32)

    return types.int32(f), codegen


@njit(**KERNEL)
def first_nonfinite(x):
    """Flat index of the first NaN or Inf of a C-contiguous float32 array, or -1. One read of
    the data and no temporary (``np.isfinite(x).all()`` writes and reads a bool array): an OR
    over all values (one vectorized loop, the common case), then a scan only when it is set."""
    flat = x.reshape(-1)
    bad = np.int32(0)
    for i in range(flat.size):
        bad |= nonfinite_i32(flat[i])
    if bad:
        for i in range(flat.size):
            if nonfinite_i32(flat[i]):
                return i
    return -1
