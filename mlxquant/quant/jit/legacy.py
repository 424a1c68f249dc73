"""Compiled legacy 32-weight block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

The loops of ggml-quants.c: ``quantize_row_q*_ref`` (no importance matrix), ``quantize_row_q*_impl``
with ``make_qx_quants`` / ``make_qkx3_quants`` (with one; Q8_0 ignores it) and ``dequantize_row_q*``.
Block layouts and the float details that decide bytes are in :mod:`mlxquant.quant.numpy.legacy`.

Speed: the per-block work is LLVM vector IR (:mod:`.simd`): the same float32 operations as C, lane
by lane, in C's order. The searches with an imatrix evaluate their trial scales in parallel lanes
(each lane a sequential C sum) and then decide in C's order.

C's float -> small-int casts (``(int8_t)v``, ``(uint8_t)v``) compile to ``cvttss2si`` and a low
byte: NaN and out-of-range values give INT_MIN (low byte 0). When a block's ``d`` is zero or a
normal float every code is within a few ulps of its range and a plain (vector) truncation is
that cast; blocks with a subnormal or infinite ``d`` take the scalar :func:`c_int32` path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .codec import JitCodec
from .numeric import F32, GROUP_MAX_EPS, KERNEL, f16_at, f32_bits, nearest_int, put_f16
from .simd import (
    NB_STEPS, absmax, absmax_first, decode_q4_0, decode_q4_1, decode_q5_0, decode_q5_1,
    decode_q8, encode_q4_0, encode_q4_1, encode_q5_0, encode_q5_1, encode_q8, min_max_first,
    qkx3_batch_15, qkx3_batch_31, qx_sums_8, qx_sums_16,
)

QK = 32
FLT_MIN_BITS = 0x00800000  # smallest normal float32
INF_BITS = 0x7F800000
HALF_DOWN = np.nextafter(F32(0.5), F32(0.0))  # 0.49999997f
TWO31 = F32(2147483648.0)


@njit(inline="always")
def plain_scale(d):
    """``d`` is +-0 or a normal finite float: every code of the block is in range."""
    e = f32_bits(d) & 0x7FFFFFFF
    return e == 0 or (e >= FLT_MIN_BITS and e < INF_BITS)


@njit(inline="always")
def c_int32(v):
    """``cvttss2si``: truncation toward zero; NaN and |v| >= 2**31 give INT_MIN."""
    if v >= -TWO31 and v < TWO31:
        return np.int64(v)
    return np.int64(-2147483648)


@njit(inline="always")
def s8(i):
    """The low byte of an int as C's ``int8_t`` (sign-extended)."""
    return ((i & 0xFF) ^ 0x80) - 0x80


@njit(inline="always")
def c_roundf_i8(v):
    """``(int8_t)roundf(v)`` (halves away from zero), as the low byte 0..255, for any float32."""
    if not (v >= -TWO31 and v < TWO31):
        return 0  # NaN, +-inf, huge: roundf keeps them, cvttss2si gives INT_MIN
    t = np.int64(v)
    r = v - F32(t)  # exact
    if r >= F32(0.5):
        t += 1
    elif r <= F32(-0.5):
        t -= 1
    return t & 0xFF


@njit(inline="always")
def pack_nibbles(o, p, L):
    for j in range(16):
        o[p + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)


@njit(inline="always")
def pack_qh(o, p, L):
    """Bit j of the little-endian u32 at ``o[p:p+4]`` is bit 4 of ``L[j]``."""
    for k in range(4):
        b = 0
        for j in range(8):
            b |= ((L[8 * k + j] >> 4) & 1) << j
        o[p + k] = b


# -- without importance matrix: quantize_row_q*_ref, blocks with a subnormal or infinite d ----
@njit(inline="always")
def ref_codes_symmetric(xb, L, idv, off, top):
    """``MIN(top, (int8_t)(x*id + off))`` (Q4_0: 8.5f, 15; Q5_0: 16.5f, 31), C's casts exactly."""
    for j in range(QK):
        L[j] = min(top, s8(c_int32(xb[j] * idv + off))) & 0xFF


@njit(inline="always")
def ref_codes_asymmetric(xb, L, mn, idv, nmax, clamp):
    """Q4_1: ``MIN(15, (int8_t)((x - min)*id + 0.5f))``; Q5_1: ``(uint8_t)((x - min)*id + 0.5f)``."""
    for j in range(QK):
        q = s8(c_int32((xb[j] - mn) * idv + F32(0.5)))
        L[j] = (min(nmax, q) if clamp else q) & 0xFF


# -- with importance matrix: quantize_row_q*_impl ------------------------------------------------
@njit(inline="always")
def row_sigma2(xr):
    sum_x2 = F32(0)
    for j in range(xr.size):
        sum_x2 += xr[j] * xr[j]
    return sum_x2 / F32(xr.size)


@njit(inline="always")
def block_weights(xb, qw, sigma2, weight):
    for j in range(QK):
        weight[j] = qw[j] * np.sqrt(sigma2 + xb[j] * xb[j])




@njit(inline="always")
def make_qx_quants_v(nmax, xr, xp, L, qw, iscales, sums):
    """ggml's make_qx_quants(32, nmax, x, L, rmse_type=1, qw) on ``xr[xp:xp+32]``: returns the
    scale; ``L`` gets ``nmax + l`` (0 for an all-zero group).

    The sums of all 19 trial scales (``-nmax/max``, then ``-(nmax + 0.1f*is)/max`` for is = -9..9,
    is != 0) are taken at once (:func:`_make_qx_sums`; they do not depend on the choices), then
    chosen in C's order; the winner's codes are rounded again at the end (the same
    ``nearest_int(iscale*x[i])``). Scratch: ``iscales`` f32[32], ``sums`` f32[64]."""
    mx = absmax_first(xr, xp)  # C: if (ax > amax) from 0: the same first value of largest |x|
    if abs(mx) < GROUP_MAX_EPS:
        for i in range(QK):
            L[i] = 0
        return F32(0)
    iscales[0] = F32(-nmax) / mx
    for k in range(18):
        s = k - 9 if k < 9 else k - 8  # -9..-1, 1..9
        iscales[k + 1] = -(F32(nmax) + F32(0.1) * F32(s)) / mx
    for k in range(19, 32):
        iscales[k] = F32(0)
    if nmax == 8:
        qx_sums_8(xr, xp, qw, iscales, sums)
    else:
        qx_sums_16(xr, xp, qw, iscales, sums)
    sumlx = sums[0]
    suml2 = sums[32]
    scale = sumlx / suml2 if suml2 != 0 else F32(0)
    best = scale * sumlx
    win = 0
    for c in range(1, 19):
        sumlx = sums[c]
        suml2 = sums[32 + c]
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            win = c
            scale = sumlx / suml2
            best = scale * sumlx
    iscale = iscales[win]
    for i in range(QK):
        L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * xr[xp + i])))
    return scale


@njit(inline="always")
def make_qkx3_quants_v(nmax, xr, xp, weights, L, iscales, res):
    """ggml's make_qkx3_quants(32, nmax, x, weights, L, &the_min, Laux, -0.9f, 0.05f, 36, false)
    on ``xr[xp:xp+32]``: returns (scale, the_min), codes in ``L``.

    The 37 trial steps are evaluated ``NB_STEPS`` at a time (:func:`_make_qkx3_batch`) with the
    current min and scanned in C's order; an accepted step changes the min (C's later steps use
    the updated one), so the next batch starts right after it. The codes are rounded once at the
    end from the (iscale, min) that produced them. Scratch: ``iscales`` f32[NB_STEPS], ``res``
    f32[4*NB_STEPS]."""
    x0 = xr[xp]
    mn = x0
    mx = x0
    sum_w = weights[0]
    sum_x = sum_w * x0
    for i in range(1, QK):
        xi = xr[xp + i]
        if xi < mn:
            mn = xi
        if xi > mx:
            mx = xi
        w = weights[i]
        sum_w += w
        sum_x += w * xi
    if mn > 0:
        mn = F32(0)
    if mx <= mn:
        for i in range(QK):
            L[i] = 0
        return F32(0), -mn
    fnmax = F32(nmax)
    iscale = fnmax / (mx - mn)
    scale = F32(1) / iscale
    best_mad = F32(0)
    for i in range(QK):
        xi = xr[xp + i]
        l = max(0, min(nmax, nearest_int(iscale * (xi - mn))))
        diff = scale * F32(l) + mn - xi
        best_mad += weights[i] * (diff * diff)
    code_iscale = iscale  # the codes L are nearest_int(code_iscale*(x - code_min)), clamped
    code_min = mn
    step = 0
    while step <= 36:
        for c in range(NB_STEPS):
            iscales[c] = (F32(-0.9) + F32(0.05) * F32(step + c) + fnmax) / (mx - mn)
        if nmax == 15:
            qkx3_batch_15(xr, xp, weights, iscales, mn, sum_w, sum_x, res)
        else:
            qkx3_batch_31(xr, xp, weights, iscales, mn, sum_w, sum_x, res)
        nxt = step + NB_STEPS
        for c in range(min(NB_STEPS, 37 - step)):
            if res[c] > 0 and res[NB_STEPS + c] < best_mad:
                best_mad = res[NB_STEPS + c]
                scale = res[2 * NB_STEPS + c]
                code_iscale = iscales[c]
                code_min = mn
                mn = res[3 * NB_STEPS + c]
                nxt = step + c + 1
                break
        step = nxt
    for i in range(QK):
        L[i] = max(0, min(nmax, nearest_int(code_iscale * (xr[xp + i] - code_min))))
    return scale, -mn


# -- kernels ------------------------------------------------------------------------------------
@njit(inline="always")
def put_u32(o, pos, v):
    for k in range(4):
        o[pos + k] = (v >> (8 * k)) & 0xFF


@njit(inline="always")
def get_u32(o, pos):
    return np.int64(o[pos]) | (np.int64(o[pos + 1]) << 8) | (np.int64(o[pos + 2]) << 16) | (np.int64(o[pos + 3]) << 24)


def _symmetric_kernels(nmax, size, five_bit):
    """Q4_0 (nmax 8) / Q5_0 (nmax 16): blocks of ``size`` bytes, d at 0, qh at 2 (Q5_0), qs last.

    The kernels close over plain ints only (Numba's disk cache keys on the pickled closure) and
    pick their vector primitives by ``five_bit``; the other branch is folded away."""
    qs_at = size - 16

    @njit(**KERNEL)
    def quantize(x, w, out):
        rows, cols = x.shape
        nb = cols // QK
        L = np.empty(QK, np.int64)
        weight = np.empty(QK, np.float32)
        iscales = np.empty(QK, np.float32)
        sums = np.empty(2 * QK, np.float32)
        off = F32(nmax) + F32(0.5)
        for r in range(rows):
            xr = x[r]
            orow = out[r]
            sigma2 = row_sigma2(xr) if w.size else F32(0)
            for b in range(nb):
                p = b * size
                xp = b * QK
                if w.size:
                    block_weights(xr[xp : xp + QK], w[xp : xp + QK], sigma2, weight)
                    put_f16(orow, p, make_qx_quants_v(nmax, xr, xp, L, weight, iscales, sums))
                else:
                    d = absmax_first(xr, xp) / F32(-nmax)
                    idv = F32(1) / d if d != 0 else F32(0)
                    put_f16(orow, p, d)
                    if plain_scale(d):
                        if five_bit:
                            qh = encode_q5_0(xr, xp, orow, p + qs_at, F32(0), idv, off)
                        else:
                            qh = encode_q4_0(xr, xp, orow, p + qs_at, F32(0), idv, off)
                        if five_bit:
                            put_u32(orow, p + 2, qh)
                        continue
                    ref_codes_symmetric(xr[xp : xp + QK], L, idv, off, 2 * nmax - 1)
                o = orow[p : p + size]
                if five_bit:
                    pack_qh(o, 2, L)
                pack_nibbles(o, qs_at, L)

    @njit(**KERNEL)
    def dequantize(data, out):
        rows, cols = out.shape
        nb = cols // QK
        for r in range(rows):
            dr = data[r]
            y = out[r]
            for b in range(nb):
                p = b * size
                if five_bit:
                    decode_q5_0(dr, p + qs_at, get_u32(dr, p + 2), y, b * QK, f16_at(dr, p), F32(0))
                else:
                    decode_q4_0(dr, p + qs_at, 0, y, b * QK, f16_at(dr, p), F32(0))

    return quantize, dequantize


def _asymmetric_kernels(nmax, size, five_bit):
    """Q4_1 (nmax 15) / Q5_1 (nmax 31): d at 0, m at 2, qh at 4 (Q5_1), qs last."""
    qs_at = size - 16

    @njit(**KERNEL)
    def quantize(x, w, out):
        rows, cols = x.shape
        nb = cols // QK
        L = np.empty(QK, np.int64)
        weight = np.empty(QK, np.float32)
        iscales = np.empty(NB_STEPS, np.float32)
        res = np.empty(4 * NB_STEPS, np.float32)
        for r in range(rows):
            xr = x[r]
            orow = out[r]
            sigma2 = row_sigma2(xr) if w.size else F32(0)
            for b in range(nb):
                p = b * size
                xp = b * QK
                if w.size:
                    block_weights(xr[xp : xp + QK], w[xp : xp + QK], sigma2, weight)
                    d, the_min = make_qkx3_quants_v(nmax, xr, xp, weight, L, iscales, res)
                    put_f16(orow, p, d)
                    put_f16(orow, p + 2, -the_min)
                else:
                    mn, mx = min_max_first(xr, xp)
                    d = (mx - mn) / F32(nmax)
                    idv = F32(1) / d if d != 0 else F32(0)
                    put_f16(orow, p, d)
                    put_f16(orow, p + 2, mn)
                    if plain_scale(d):
                        if five_bit:
                            qh = encode_q5_1(xr, xp, orow, p + qs_at, mn, idv, F32(0.5))
                        else:
                            qh = encode_q4_1(xr, xp, orow, p + qs_at, mn, idv, F32(0.5))
                        if five_bit:
                            put_u32(orow, p + 4, qh)
                        continue
                    ref_codes_asymmetric(xr[xp : xp + QK], L, mn, idv, nmax, not five_bit)
                o = orow[p : p + size]
                if five_bit:
                    pack_qh(o, 4, L)
                pack_nibbles(o, qs_at, L)

    @njit(**KERNEL)
    def dequantize(data, out):
        rows, cols = out.shape
        nb = cols // QK
        for r in range(rows):
            dr = data[r]
            y = out[r]
            for b in range(nb):
                p = b * size
                d = f16_at(dr, p)
                m = f16_at(dr, p + 2)
                if five_bit:
                    decode_q5_1(dr, p + qs_at, get_u32(dr, p + 4), y, b * QK, d, m)
                else:
                    decode_q4_1(dr, p + qs_at, 0, y, b * QK, d, m)

    return quantize, dequantize


@njit(**KERNEL)
def quantize_q8_0(x, w, out):
    rows, cols = x.shape
    nb = cols // QK
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for b in range(nb):
            p = b * 34
            xp = b * QK
            d = absmax(xr, xp) / F32(127)  # C: amax = MAX(amax, fabsf(v)), from +0
            idv = F32(1) / d if d != 0 else F32(0)
            put_f16(orow, p, d)
            if plain_scale(d):
                encode_q8(xr, xp, orow, p + 2, idv)
            else:
                for j in range(QK):
                    orow[p + 2 + j] = c_roundf_i8(xr[xp + j] * idv)


@njit(**KERNEL)
def dequantize_q8_0(data, out):
    rows, cols = out.shape
    nb = cols // QK
    for r in range(rows):
        dr = data[r]
        y = out[r]
        for b in range(nb):
            p = b * 34
            decode_q8(dr, p + 2, y, b * QK, f16_at(dr, p))


quantize_q4_0, dequantize_q4_0 = _symmetric_kernels(8, 18, False)
quantize_q5_0, dequantize_q5_0 = _symmetric_kernels(16, 22, True)
quantize_q4_1, dequantize_q4_1 = _asymmetric_kernels(15, 20, False)
quantize_q5_1, dequantize_q5_1 = _asymmetric_kernels(31, 24, True)


class Q4_0(JitCodec, qtype="Q4_0", backend="numba"):
    quantize_kernel = staticmethod(quantize_q4_0)
    dequantize_kernel = staticmethod(dequantize_q4_0)


class Q4_1(JitCodec, qtype="Q4_1", backend="numba"):
    quantize_kernel = staticmethod(quantize_q4_1)
    dequantize_kernel = staticmethod(dequantize_q4_1)


class Q5_0(JitCodec, qtype="Q5_0", backend="numba"):
    quantize_kernel = staticmethod(quantize_q5_0)
    dequantize_kernel = staticmethod(dequantize_q5_0)


class Q5_1(JitCodec, qtype="Q5_1", backend="numba"):
    quantize_kernel = staticmethod(quantize_q5_1)
    dequantize_kernel = staticmethod(dequantize_q5_1)


class Q8_0(JitCodec, qtype="Q8_0", backend="numba"):
    quantize_kernel = staticmethod(quantize_q8_0)
    dequantize_kernel = staticmethod(dequantize_q8_0)
