"""Compiled half-precision float types: F16 and BF16 (one weight per "block", 2 bytes each).

F16: ggml's ``ggml_fp32_to_fp16_row`` / ``ggml_fp16_to_fp32_row`` (GGML_FP32_TO_FP16 and
GGML_FP16_TO_FP32, bit-exact; a NaN half comes back as a quiet NaN). BF16:
``ggml_compute_fp32_to_bf16`` (round to nearest even on the upper 16 bits, NaN forced quiet) and
the plain shift back. Both are memory-bound: the whole chunk is one branch-free loop over flat
float32 / uint16 views, which LLVM vectorizes. See :mod:`mlxquant.quant.numpy.floats`.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .codec import JitCodec
from .numeric import KERNEL, fp16_to_fp32, fp32_to_fp16, nonfinite_i32


@intrinsic
def fp32_to_bf16(typingctx, f):
    """ggml_compute_fp32_to_bf16 in 32-bit integers (so that the loop vectorizes 8 wide): NaN
    keeps its top bits and is made quiet (``(u >> 16) | 64``), anything else rounds to nearest
    even, ``(u + 0x7fff + ((u >> 16) & 1)) >> 16`` (no overflow for finite input: the largest
    pattern is 0x7f7fffff)."""
    if not isinstance(f, types.Float) or f.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        u = builder.bitcast(args[0], i32)
        hi = builder.lshr(u, i32(16))
        rounded = builder.lshr(builder.add(builder.add(u, i32(0x7FFF)), builder.and_(hi, i32(1))), i32(16))
        nan = builder.icmp_unsigned(">", builder.and_(u, i32(0x7FFFFFFF)), i32(0x7F800000))
        return builder.trunc(builder.select(nan, builder.or_(hi, i32(64)), rounded), ir.IntType(16))

    return types.uint16(f), codegen


@intrinsic
def bf16_to_fp32(typingctx, h):
    """bf16 bits (uint16) -> float32: the bits shifted up, in 32-bit integers."""
    if not isinstance(h, types.Integer) or h.bitwidth != 16:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        return builder.bitcast(builder.shl(builder.zext(args[0], i32), i32(16)), ir.FloatType())

    return types.float32(h), codegen


# The kernels see C-contiguous (rows, cols) float32 and (rows, 2*cols) uint8 chunks: flat views.
# The quantizers check finiteness in the same pass (these types are memory-bound, and a
# separate check would read the input twice): they return 1 if the input holds NaN or Inf.
@njit(**KERNEL)
def quantize_f16(x, w, out):
    xf = x.reshape(x.size)
    h = out.reshape(out.size).view(np.uint16)
    bad = np.int32(0)
    for i in range(xf.size):
        v = xf[i]
        bad |= nonfinite_i32(v)
        h[i] = fp32_to_fp16(v)
    return bad


@njit(**KERNEL)
def dequantize_f16(data, out):
    h = data.reshape(data.size).view(np.uint16)
    y = out.reshape(out.size)
    for i in range(y.size):
        y[i] = fp16_to_fp32(h[i])


@njit(**KERNEL)
def quantize_bf16(x, w, out):
    xf = x.reshape(x.size)
    h = out.reshape(out.size).view(np.uint16)
    bad = np.int32(0)
    for i in range(xf.size):
        v = xf[i]
        bad |= nonfinite_i32(v)
        h[i] = fp32_to_bf16(v)
    return bad


@njit(**KERNEL)
def dequantize_bf16(data, out):
    h = data.reshape(data.size).view(np.uint16)
    y = out.reshape(out.size)
    for i in range(y.size):
        y[i] = bf16_to_fp32(h[i])


class F16(JitCodec, qtype="F16", backend="numba"):
    checks_finite = True
    quantize_kernel = staticmethod(quantize_f16)
    dequantize_kernel = staticmethod(dequantize_f16)


class BF16(JitCodec, qtype="BF16", backend="numba"):
    checks_finite = True
    quantize_kernel = staticmethod(quantize_bf16)
    dequantize_kernel = staticmethod(dequantize_bf16)
