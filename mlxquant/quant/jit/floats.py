"""Compiled half-precision float types: F16 and BF16 (one weight per "block", 2 bytes each).

F16: ggml's ``ggml_fp32_to_fp16_row`` / ``ggml_fp16_to_fp32_row`` (GGML_FP32_TO_FP16 and
GGML_FP16_TO_FP32, bit-exact; a NaN half comes back as a quiet NaN). BF16:
``ggml_compute_fp32_to_bf16`` (round to nearest even on the upper 16 bits, NaN forced quiet) and
the plain shift back. Both are memory-bound: the whole chunk is one branch-free loop over flat
float32 / uint16 views, which LLVM vectorizes. See :mod:`mlxquant.quant.floats`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .codec import JitCodec
from .numeric import KERNEL, bits_f32, f32_bits, fp16_to_fp32, fp32_to_fp16


@njit(inline="always")
def fp32_to_bf16(f):
    """ggml_compute_fp32_to_bf16: NaN keeps its top bits and is made quiet; else round to
    nearest even (no overflow for finite input: the largest pattern is 0x7f7fffff)."""
    u = f32_bits(f)
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return (u >> 16) | 64
    return (u + (0x7FFF + ((u >> 16) & 1))) >> 16


# The kernels see C-contiguous (rows, cols) float32 and (rows, 2*cols) uint8 chunks: flat views.
@njit(**KERNEL)
def quantize_f16(x, w, out):
    xf = x.reshape(x.size)
    h = out.reshape(out.size).view(np.uint16)
    for i in range(xf.size):
        h[i] = fp32_to_fp16(xf[i])


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
    for i in range(xf.size):
        h[i] = fp32_to_bf16(xf[i])


@njit(**KERNEL)
def dequantize_bf16(data, out):
    h = data.reshape(data.size).view(np.uint16)
    y = out.reshape(out.size)
    for i in range(y.size):
        y[i] = bits_f32(np.int64(h[i]) << 16)


class F16(JitCodec, qtype="F16", backend="numba"):
    quantize_kernel = staticmethod(quantize_f16)
    dequantize_kernel = staticmethod(dequantize_f16)


class BF16(JitCodec, qtype="BF16", backend="numba"):
    quantize_kernel = staticmethod(quantize_bf16)
    dequantize_kernel = staticmethod(dequantize_bf16)
