"""Compiled ternary types: TQ1_0 and TQ2_0 (BitNet b1.58 / TriLM weights).

The loops of ggml-quants.c (``quantize_row_tq1_0_ref``, ``quantize_row_tq2_0_ref``,
``dequantize_row_tq1_0``, ``dequantize_row_tq2_0``); block layouts are in
:mod:`mlxquant.quant.numpy.ternary`. Both quantizers ignore the importance matrix.

``lroundf(x * id) + 1`` is computed with comparisons: ``|x * id| <= 1`` up to rounding, so the
trit is ``1 + (v >= 0.5) - (v <= -0.5)``. When ``id`` overflowed to inf (``d`` below 2**-128)
every ``v`` is ±inf or NaN, glibc's ``lroundf`` gives LONG_MIN and the trit is 1; with ``d == 0``
(``id == 0``) the trit is 1 as well.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .codec import JitCodec
from .numeric import F32, KERNEL, f16_at, put_f16

QK_K = 256
INF = np.float32(np.inf)


@njit(inline="always")
def scale_and_trits(xb, t):
    """amax -> d, and trits (0, 1, 2) of the 256 weights into ``t``; returns d."""
    amax = F32(0)
    for j in range(QK_K):
        a = abs(xb[j])
        amax = amax if amax > a else a  # MAX(amax, fabsf(v))
    d = amax
    idd = F32(1) / d if d != 0 else F32(0)
    if idd == INF:
        for j in range(QK_K):
            t[j] = 1
    else:
        for j in range(QK_K):
            v = xb[j] * idd
            t[j] = np.uint8(1) + np.uint8(v >= F32(0.5)) - np.uint8(v <= F32(-0.5))
    return d


@njit(inline="always")
def ceil243(q):
    return (q * 256 + 242) // 243


@njit(**KERNEL)
def quantize_tq1_0(x, w, out):
    rows, cols = x.shape
    t = np.empty(QK_K, np.uint8)
    for r in range(rows):
        for b in range(cols // QK_K):
            xb = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * 54 : (b + 1) * 54]
            d = scale_and_trits(xb, t)
            for m in range(32):
                q = np.int32(t[m])
                for n in range(1, 5):
                    q = q * 3 + t[m + 32 * n]
                o[m] = ceil243(q)
            for m in range(16):
                q = np.int32(t[160 + m])
                for n in range(1, 5):
                    q = q * 3 + t[160 + m + 16 * n]
                o[32 + m] = ceil243(q)
            for j in range(4):
                q = np.int32(t[240 + j])
                for n in range(1, 4):
                    q = q * 3 + t[240 + j + 4 * n]
                o[48 + j] = ceil243(q * 3)
            put_f16(o, 52, d)


@njit(**KERNEL)
def quantize_tq2_0(x, w, out):
    rows, cols = x.shape
    t = np.empty(QK_K, np.uint8)
    for r in range(rows):
        for b in range(cols // QK_K):
            xb = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * 66 : (b + 1) * 66]
            d = scale_and_trits(xb, t)
            for h in range(2):
                for m in range(32):
                    base = 128 * h + m
                    o[32 * h + m] = t[base] | (t[base + 32] << 2) | (t[base + 64] << 4) | (t[base + 96] << 6)
            put_f16(o, 64, d)


@njit(inline="always")
def trit(byte, pow3):
    """``xi - 1`` of dequantize_row_tq1_0: ``(((uint8_t)(byte * pow3)) * 3 >> 8) - 1``."""
    q = (np.int32(byte) * pow3) & 0xFF
    return ((q * 3) >> 8) - 1


# The inner loops run to ``min(32, cols)`` (always 32) rather than a constant: a constant trip
# count makes LLVM unroll them fully into scalar code instead of vectorizing them.


@njit(**KERNEL)
def dequantize_tq1_0(data, out):
    rows, cols = out.shape
    n32 = min(32, cols)
    n16 = min(16, cols)
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 54 : (b + 1) * 54]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 52)
            # each byte read once, its 5 trits stored to 5 rows of the output order
            for m in range(n32):
                q = np.int32(blk[m])
                y[m] = F32(trit(q, 1)) * d
                y[32 + m] = F32(trit(q, 3)) * d
                y[64 + m] = F32(trit(q, 9)) * d
                y[96 + m] = F32(trit(q, 27)) * d
                y[128 + m] = F32(trit(q, 81)) * d
            for m in range(n16):
                q = np.int32(blk[32 + m])
                y[160 + m] = F32(trit(q, 1)) * d
                y[176 + m] = F32(trit(q, 3)) * d
                y[192 + m] = F32(trit(q, 9)) * d
                y[208 + m] = F32(trit(q, 27)) * d
                y[224 + m] = F32(trit(q, 81)) * d
            p = 1
            for n in range(4):
                for j in range(4):
                    y[240 + 4 * n + j] = F32(trit(blk[48 + j], p)) * d
                p *= 3


@njit(**KERNEL)
def dequantize_tq2_0(data, out):
    rows, cols = out.shape
    n32 = min(32, cols)
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 66 : (b + 1) * 66]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 64)
            for h in range(2):
                qs = blk[32 * h : 32 * h + 32]
                yy = y[128 * h : 128 * h + 128]
                for m in range(n32):
                    q = np.int32(qs[m])
                    yy[m] = F32((q & 3) - 1) * d
                    yy[32 + m] = F32(((q >> 2) & 3) - 1) * d
                    yy[64 + m] = F32(((q >> 4) & 3) - 1) * d
                    yy[96 + m] = F32(((q >> 6) & 3) - 1) * d


class TQ1_0(JitCodec, qtype="TQ1_0", backend="numba"):
    quantize_kernel = staticmethod(quantize_tq1_0)
    dequantize_kernel = staticmethod(dequantize_tq1_0)


class TQ2_0(JitCodec, qtype="TQ2_0", backend="numba"):
    quantize_kernel = staticmethod(quantize_tq2_0)
    dequantize_kernel = staticmethod(dequantize_tq2_0)
