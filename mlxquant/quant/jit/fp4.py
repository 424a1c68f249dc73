"""Compiled 4-bit float (E2M1) types: MXFP4 (32 weights, E8M0 scale) and NVFP4 (64 weights, four
UE4M3 scales).

The loops of ggml-quants.c (``quantize_row_mxfp4_ref``, ``quantize_row_nvfp4_ref``,
``best_index_mxfp4``, ``dequantize_row_mxfp4``, ``dequantize_row_nvfp4``) and ggml-impl.h
(``ggml_e8m0_to_fp32_half``, ``ggml_fp32_to_ue4m3``, ``ggml_ue4m3_to_fp32``); block layouts
are in :mod:`mlxquant.quant.numpy.fp4`. Both quantizers ignore the importance matrix.

``best_index_mxfp4`` runs as written (16 candidates, first smallest error; selects for branches), so no argument about
ties or saturated scales is needed; the scale decoders are tables of the exact float32 values.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..numpy.fp4 import E8M0_HALF, KVALUES_MXFP4, UE4M3_HALF
from .codec import JitCodec
from .numeric import F32, KERNEL, f32_bits

KV = KVALUES_MXFP4.astype(np.float32)
E8M0_HALF_TAB = np.ascontiguousarray(E8M0_HALF, dtype=np.float32)
UE4M3_HALF_TAB = np.ascontiguousarray(UE4M3_HALF, dtype=np.float32)


@njit(inline="always")
def best_indices(xb, d, n, codes):
    """``codes[j] = best_index_mxfp4(xb[j], d)`` for ``j < n``: the first index of the smallest
    ``fabsf(kvalues_mxfp4[i]*d - x)``, with selects instead of branches (the loop over j
    vectorizes; ``n`` is a runtime value so that LLVM does not unroll it into scalar code)."""
    e0 = KV[0] * d
    for j in range(n):
        xj = xb[j]
        best_err = abs(e0 - xj)
        best = 0
        for i in range(1, 16):
            err = abs(KV[i] * d - xj)
            lt = err < best_err
            best_err = err if lt else best_err
            best = i if lt else best
        codes[j] = best


@njit(inline="always")
def fp32_to_ue4m3(x):
    """ggml_fp32_to_ue4m3."""
    if not (x > F32(0)):
        return 0
    if x > F32(448):
        x = F32(448)
    bits = f32_bits(x)
    fp32_exp = ((bits >> 23) & 0xFF) - 127
    fp32_man = (bits >> 20) & 0x7
    ue4m3_exp = fp32_exp + 7
    if ue4m3_exp <= 0:
        man = np.int32(x * F32(512) + F32(0.5))  # C (int): truncation
        if man > 7:
            man = 7
        if man < 1:
            return 0
        return man
    if ue4m3_exp >= 15:
        return 0x7E
    round_bit = (bits >> 19) & 1
    ue4m3_man = fp32_man + round_bit
    if ue4m3_man > 7:
        ue4m3_man = 0
        ue4m3_exp += 1
        if ue4m3_exp >= 15:
            return 0x7E
    return (ue4m3_exp << 3) | ue4m3_man


@njit(**KERNEL)
def quantize_mxfp4(x, w, out):
    rows, cols = x.shape
    n32 = min(32, cols)
    codes = np.empty(32, np.int32)
    for r in range(rows):
        for b in range(cols // 32):
            xb = x[r, b * 32 : (b + 1) * 32]
            o = out[r, b * 17 : (b + 1) * 17]
            amax = F32(0)
            for j in range(32):
                a = abs(xb[j])
                if amax < a:
                    amax = a
            e = 0
            if amax > F32(0):
                # log2f is correctly rounded: the float64 log2 rounded to float32 equals it
                lg = F32(np.log2(np.float64(amax)))
                e = np.int32(np.floor(lg) - F32(2) + F32(127)) & 0xFF  # (uint8_t) via cvttss2si
            o[0] = e
            d = E8M0_HALF_TAB[e]
            best_indices(xb, d, n32, codes)
            for j in range(16):
                o[1 + j] = codes[j] | (codes[16 + j] << 4)


@njit(**KERNEL)
def quantize_nvfp4(x, w, out):
    rows, cols = x.shape
    n16 = min(16, cols)
    codes = np.empty(16, np.int32)
    for r in range(rows):
        for b in range(cols // 64):
            o = out[r, b * 36 : (b + 1) * 36]
            for s in range(4):
                xb = x[r, b * 64 + 16 * s : b * 64 + 16 * s + 16]
                amax = F32(0)
                for j in range(16):
                    a = abs(xb[j])
                    if amax < a:
                        amax = a
                ue = fp32_to_ue4m3(amax / F32(6))
                o[s] = ue
                d = UE4M3_HALF_TAB[ue]
                best_indices(xb, d, n16, codes)
                for j in range(8):
                    o[4 + 8 * s + j] = codes[j] | (codes[8 + j] << 4)


# Inner loops run to ``min(n, cols)`` (always n) rather than a constant: a constant trip count
# makes LLVM unroll them fully into scalar code instead of vectorizing them.


@njit(**KERNEL)
def dequantize_mxfp4(data, out):
    rows, cols = out.shape
    n16 = min(16, cols)
    for r in range(rows):
        for b in range(cols // 32):
            blk = data[r, b * 17 : (b + 1) * 17]
            y = out[r, b * 32 : (b + 1) * 32]
            d = E8M0_HALF_TAB[blk[0]]
            for j in range(n16):
                q = blk[1 + j]
                y[j] = KV[q & 0xF] * d
                y[j + 16] = KV[q >> 4] * d


@njit(**KERNEL)
def dequantize_nvfp4(data, out):
    rows, cols = out.shape
    n8 = min(8, cols)
    for r in range(rows):
        for b in range(cols // 64):
            blk = data[r, b * 36 : (b + 1) * 36]
            for s in range(4):
                y = out[r, b * 64 + 16 * s : b * 64 + 16 * s + 16]
                d = UE4M3_HALF_TAB[blk[s]]
                for j in range(n8):
                    q = blk[4 + 8 * s + j]
                    y[j] = KV[q & 0xF] * d
                    y[j + 8] = KV[q >> 4] * d


class MXFP4(JitCodec, qtype="MXFP4", backend="numba"):
    quantize_kernel = staticmethod(quantize_mxfp4)
    dequantize_kernel = staticmethod(dequantize_mxfp4)


class NVFP4(JitCodec, qtype="NVFP4", backend="numba"):
    quantize_kernel = staticmethod(quantize_nvfp4)
    dequantize_kernel = staticmethod(dequantize_nvfp4)
