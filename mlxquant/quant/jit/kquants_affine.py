"""Compiled K-quants with a scale and a min per sub-block: Q2_K, Q4_K, Q5_K.

The loops of ggml-quants.c (``quantize_row_q*_K_ref``, ``quantize_row_q*_K_impl``,
``make_qkx2_quants``, ``make_qkx3_quants``, ``make_qp_quants``, ``dequantize_row_q*_K``); block
layouts and the algorithm in words are in :mod:`mlxquant.quant.numpy.kquants_affine`.

Without an imatrix ggml quantizes the whole tensor as one long row (``_ref``); with one it goes
row by row (``_impl``) and the imatrix repeats over the rows' super-blocks. Both are the same
loops per super-block, so the kernels walk the super-blocks of all rows in order.

Speed: the scale/min search (make_qkx*, 16-37 steps over every sub-block) is nearly all the
work, and in C it is latency-bound on its sequential float sums. Here :func:`search_lanes` runs
it on the sub-blocks of a tile of super-blocks side by side, position-major, so that each
sub-block keeps its own sums in ggml's order (same bits) while LLVM vectorizes across
sub-blocks. Everything after the search runs per super-block exactly as ggml's loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .codec import JitCodec
from .numeric import F32, KERNEL, f16_at, nearest_int, put_f16
from .search_scale_min import LANES, lane_scratch, make_qp_quants, search_lanes

QK_K = 256


# -- Q4_K / Q5_K ---------------------------------------------------------------------------------
@njit(inline="always")
def scale_min_k4(j, q):
    """ggml's get_scale_min_k4: the 6-bit scale and min of sub-block ``j`` from ``scales[12]``."""
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


@njit(inline="always")
def _put_scales_k4(sc, ls_arr, lm_arr):
    """Pack 8 six-bit scales and mins into ``scales[12]`` as ggml's quantizers do (uint8 wrap)."""
    for j in range(12):
        sc[j] = 0
    for j in range(8):
        ls = ls_arr[j]
        lm = lm_arr[j]
        if j < 4:
            sc[j] = ls & 0xFF
            sc[j + 4] = lm & 0xFF
        else:
            sc[j + 4] = ((ls & 0xF) | ((lm & 0xF) << 4)) & 0xFF
            sc[j - 4] = (sc[j - 4] | ((ls >> 4) << 6)) & 0xFF
            sc[j] = (sc[j] | ((lm >> 4) << 6)) & 0xFF


@njit(**KERNEL)
def quantize_k45(x, w, out, nmax, rmin, rdelta, nstep, five):
    """quantize_row_q{4,5}_K_ref (no imatrix: ``w`` empty) or _impl, every row of ``x``.

    Super-blocks go by tiles of ``LANES // 8``: their 8 sub-blocks each are transposed into
    position-major ``X, W`` and searched together (:func:`search_lanes`); the rest (scales of
    the scales, re-coding, packing) runs per super-block as in ggml.
    """
    rows, cols = x.shape
    nb = cols // QK_K
    bs = 176 if five else 144
    total = rows * nb
    tile = LANES // 8
    has_w = w.size > 0
    X = np.empty((32, LANES), np.float32)
    W = np.empty((32, LANES), np.float32)
    Lf = np.empty((32, LANES), np.float32)
    Lout = np.empty((32, LANES), np.uint8)
    flat = np.empty(LANES, np.bool_)
    V = lane_scratch(LANES)
    swl = np.empty(LANES, np.float32)
    L = np.empty(QK_K, np.uint8)
    scales = np.empty(8, np.float32)
    mins = np.empty(8, np.float32)
    sw = np.empty(8, np.float32)
    ls_arr = np.empty(8, np.int64)
    lm_arr = np.empty(8, np.int64)
    codes = np.empty(8, np.uint8)
    for t0 in range(0, total, tile):
        nsb = min(tile, total - t0)
        ng = 8 * nsb
        for s in range(nsb):
            r = (t0 + s) // nb
            b = (t0 + s) - r * nb
            xb = x[r, b * QK_K : (b + 1) * QK_K]
            for j in range(8):
                for i in range(32):
                    X[i, 8 * s + j] = xb[32 * j + i]
            if has_w:  # weights qw * sqrtf(sigma2 + x*x), sigma2 = 2*sum(x^2)/256
                qw = w[b * QK_K : (b + 1) * QK_K]
                sum_x2 = F32(0)
                for l in range(QK_K):
                    sum_x2 += xb[l] * xb[l]
                sigma2 = F32(2) * sum_x2 / F32(QK_K)
                for j in range(8):
                    for i in range(32):
                        v = xb[32 * j + i]
                        W[i, 8 * s + j] = qw[32 * j + i] * np.sqrt(sigma2 + v * v)
        if has_w:  # sw[j]: sum of the sub-block's weights
            for g in range(ng):
                swl[g] = F32(0)
            for i in range(32):
                for g in range(ng):
                    swl[g] += W[i, g]
            search_lanes(X, W, ng, 32, nmax, F32(-0.9), F32(0.05), 36, False, V, Lf, Lout, flat)
        else:  # weights av_x + |x|, av_x = sqrtf(sum(x^2)/32) of the sub-block
            for g in range(ng):
                swl[g] = F32(0)
            for i in range(32):
                for g in range(ng):
                    swl[g] += X[i, g] * X[i, g]
            for g in range(ng):
                swl[g] = np.sqrt(swl[g] / F32(32))
            for i in range(32):
                for g in range(ng):
                    W[i, g] = swl[g] + abs(X[i, g])
            search_lanes(X, W, ng, 32, nmax, rmin, rdelta, nstep, False, V, Lf, Lout, flat)
        the_min = V[0]
        scale = V[5]
        for s in range(nsb):
            r = (t0 + s) // nb
            b = (t0 + s) - r * nb
            xb = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * bs : (b + 1) * bs]
            for j in range(8):
                scales[j] = scale[8 * s + j]
                mins[j] = the_min[8 * s + j]
                sw[j] = swl[8 * s + j]
                for i in range(32):
                    L[32 * j + i] = Lout[i, 8 * s + j]
            if has_w:
                d_val = make_qp_quants(8, 63, scales, codes, sw)
                for j in range(8):
                    ls_arr[j] = codes[j]
                m_val = make_qp_quants(8, 63, mins, codes, sw)
                for j in range(8):
                    lm_arr[j] = codes[j]
                if five:  # Q5_K's impl clamps MIN(63, ls); Q4_K's does not
                    for j in range(8):
                        ls_arr[j] = min(63, ls_arr[j])
                        lm_arr[j] = min(63, lm_arr[j])
            else:
                max_scale = F32(0)
                max_min = F32(0)
                for j in range(8):
                    if scales[j] > max_scale:
                        max_scale = scales[j]
                    if mins[j] > max_min:
                        max_min = mins[j]
                inv_scale = F32(63) / max_scale if max_scale > 0 else F32(0)
                inv_min = F32(63) / max_min if max_min > 0 else F32(0)
                for j in range(8):
                    ls_arr[j] = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)  # uint8_t, MIN
                    lm_arr[j] = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
                d_val = max_scale / F32(63)
                m_val = max_min / F32(63)
            sc = o[4:16]
            _put_scales_k4(sc, ls_arr, lm_arr)
            d_all = put_f16(o, 0, d_val)
            m_all = put_f16(o, 2, m_val)
            for j in range(8):  # re-code against the stored scales (ggml: if (!d) continue)
                s6, m6 = scale_min_k4(j, sc)
                d = d_all * F32(s6)
                if d == 0:
                    continue
                dm = m_all * F32(m6)
                for i in range(32):
                    L[32 * j + i] = max(0, min(nmax, nearest_int((xb[32 * j + i] + dm) / d)))
            if five:
                qh = o[16:48]
                ql = o[48:176]
                for j in range(32):
                    qh[j] = 0
                for c in range(4):
                    for j in range(32):
                        l1 = L[64 * c + j]
                        l2 = L[64 * c + 32 + j]
                        ql[32 * c + j] = (l1 & 0xF) | ((l2 & 0xF) << 4)
                        qh[j] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1))
            else:
                for c in range(4):
                    for l in range(32):
                        o[16 + 32 * c + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4)


@njit(**KERNEL)
def quantize_q4_k(x, w, out):
    quantize_k45(x, w, out, 15, F32(-1.0), F32(0.1), 20, False)


@njit(**KERNEL)
def quantize_q5_k(x, w, out):
    quantize_k45(x, w, out, 31, F32(-0.5), F32(0.1), 15, True)


@njit(**KERNEL)
def dequantize_q4_k(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 144 : (b + 1) * 144]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 0)
            dmin = f16_at(blk, 2)
            sc = blk[4:16]
            for c in range(4):
                s1, m1 = scale_min_k4(2 * c, sc)
                s2, m2 = scale_min_k4(2 * c + 1, sc)
                d1 = d * F32(s1)
                mm1 = dmin * F32(m1)
                d2 = d * F32(s2)
                mm2 = dmin * F32(m2)
                for l in range(32):
                    q = blk[16 + 32 * c + l]
                    y[64 * c + l] = d1 * F32(np.uint8(q & 0xF)) - mm1
                    y[64 * c + 32 + l] = d2 * F32(np.uint8(q >> 4)) - mm2


# -- Q5_K -----------------------------------------------------------------------------------------
@njit(inline="always")
def _deq_q5_chunk(blk, y, sc, d, dmin, c):
    """64 weights of chunk ``c`` (a literal at every call: constant shifts keep the loop on
    bytes, so it vectorizes): y = d*sc*q - dmin*m, q = low nibble | bit 2c (2c+1) of qh << 4."""
    s1, m1 = scale_min_k4(2 * c, sc)
    s2, m2 = scale_min_k4(2 * c + 1, sc)
    d1 = d * F32(s1)
    mm1 = dmin * F32(m1)
    d2 = d * F32(s2)
    mm2 = dmin * F32(m2)
    for l in range(32):
        q = blk[48 + 32 * c + l]
        h = blk[16 + l]
        y[64 * c + l] = d1 * F32(np.uint8((q & 0xF) | (((h >> (2 * c)) & 1) << 4))) - mm1
        y[64 * c + 32 + l] = d2 * F32(np.uint8((q >> 4) | (((h >> (2 * c + 1)) & 1) << 4))) - mm2


@njit(**KERNEL)
def dequantize_q5_k(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 176 : (b + 1) * 176]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 0)
            dmin = f16_at(blk, 2)
            sc = blk[4:16]
            _deq_q5_chunk(blk, y, sc, d, dmin, 0)
            _deq_q5_chunk(blk, y, sc, d, dmin, 1)
            _deq_q5_chunk(blk, y, sc, d, dmin, 2)
            _deq_q5_chunk(blk, y, sc, d, dmin, 3)


# -- Q2_K -----------------------------------------------------------------------------------------
@njit(**KERNEL)
def quantize_q2_k(x, w, out):
    """quantize_row_q2_K_ref (no imatrix: ``w`` empty) or _impl, every row of ``x``; the 16
    sub-blocks of ``LANES // 16`` super-blocks are searched together as in :func:`quantize_k45`."""
    rows, cols = x.shape
    nb = cols // QK_K
    total = rows * nb
    tile = LANES // 16
    has_w = w.size > 0
    X = np.empty((16, LANES), np.float32)
    W = np.empty((16, LANES), np.float32)
    Lf = np.empty((16, LANES), np.float32)
    Lout = np.empty((16, LANES), np.uint8)
    flat = np.empty(LANES, np.bool_)
    V = lane_scratch(LANES)
    swl = np.empty(LANES, np.float32)
    L = np.empty(QK_K, np.uint8)
    scales = np.empty(16, np.float32)
    mins = np.empty(16, np.float32)
    sw = np.empty(16, np.float32)
    Ls = np.empty(16, np.uint8)
    Lm = np.empty(16, np.uint8)
    for t0 in range(0, total, tile):
        nsb = min(tile, total - t0)
        ng = 16 * nsb
        for s in range(nsb):
            r = (t0 + s) // nb
            b = (t0 + s) - r * nb
            xb = x[r, b * QK_K : (b + 1) * QK_K]
            for j in range(16):
                for i in range(16):
                    X[i, 16 * s + j] = xb[16 * j + i]
            if has_w:  # weights qw * sqrtf(sigma2 + x*x), sigma2 = sum(x^2)/256
                qw = w[b * QK_K : (b + 1) * QK_K]
                sumx2 = F32(0)
                for l in range(QK_K):
                    sumx2 += xb[l] * xb[l]
                sigma2 = sumx2 / F32(QK_K)
                for j in range(16):
                    for i in range(16):
                        v = xb[16 * j + i]
                        W[i, 16 * s + j] = qw[16 * j + i] * np.sqrt(sigma2 + v * v)
        if has_w:
            for g in range(ng):
                swl[g] = F32(0)
            for i in range(16):
                for g in range(ng):
                    swl[g] += W[i, g]
            search_lanes(X, W, ng, 16, 3, F32(-0.9), F32(0.05), 36, False, V, Lf, Lout, flat)
        else:  # weights |x|, weighted absolute error
            for i in range(16):
                for g in range(ng):
                    W[i, g] = abs(X[i, g])
            search_lanes(X, W, ng, 16, 3, F32(-0.5), F32(0.1), 15, True, V, Lf, Lout, flat)
        the_min = V[0]
        scale = V[5]
        for s in range(nsb):
            r = (t0 + s) // nb
            b = (t0 + s) - r * nb
            xb = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * 84 : (b + 1) * 84]
            sc = o[0:16]
            for j in range(16):
                scales[j] = scale[16 * s + j]
                mins[j] = the_min[16 * s + j]
                sw[j] = swl[16 * s + j]
                for i in range(16):
                    L[16 * j + i] = Lout[i, 16 * s + j]
            if has_w:
                dv = make_qp_quants(16, 15, scales, Ls, sw)
                mv = make_qp_quants(16, 15, mins, Lm, sw)
                for j in range(16):
                    sc[j] = (Ls[j] | (Lm[j] << 4)) & 0xFF
            else:
                max_scale = F32(0)
                max_min = F32(0)
                for j in range(16):
                    if scales[j] > max_scale:
                        max_scale = scales[j]
                    if mins[j] > max_min:
                        max_min = mins[j]
                if max_scale > 0:
                    iscale = F32(15) / max_scale
                    for j in range(16):
                        sc[j] = nearest_int(iscale * scales[j]) & 0xFF
                    dv = max_scale / F32(15)
                else:
                    for j in range(16):
                        sc[j] = 0
                    dv = F32(0)
                if max_min > 0:
                    iscale = F32(15) / max_min
                    for j in range(16):
                        sc[j] = (sc[j] | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
                    mv = max_min / F32(15)
                else:
                    mv = F32(0)
            d_all = put_f16(o, 80, dv)
            m_all = put_f16(o, 82, mv)
            for j in range(16):  # re-code against the stored scales (ggml: if (!d) continue)
                d = d_all * F32(sc[j] & 0xF)
                if d == 0:
                    continue
                dm = m_all * F32(sc[j] >> 4)
                for i in range(16):
                    L[16 * j + i] = max(0, min(3, nearest_int((xb[16 * j + i] + dm) / d)))
            for h in range(2):
                for l in range(32):
                    o[16 + 32 * h + l] = (L[128 * h + l] | (L[128 * h + 32 + l] << 2)
                                          | (L[128 * h + 64 + l] << 4) | (L[128 * h + 96 + l] << 6))


@njit(inline="always")
def _deq_q2_plane(blk, y, d, dmin, h, s):
    """The 32 weights ``128h + 32s + l`` from bits ``2s`` of bytes ``16 + 32h + l`` (``s`` a
    literal at every call: a constant shift keeps the loop on bytes, so it vectorizes); weights
    ``l < 16`` use scale byte ``8h + 2s``, the others ``8h + 2s + 1``."""
    sc0 = blk[8 * h + 2 * s]
    sc1 = blk[8 * h + 2 * s + 1]
    dl0 = d * F32(sc0 & 0xF)
    ml0 = dmin * F32(sc0 >> 4)
    dl1 = d * F32(sc1 & 0xF)
    ml1 = dmin * F32(sc1 >> 4)
    for l in range(32):
        dl = dl0 if l < 16 else dl1
        ml = ml0 if l < 16 else ml1
        y[128 * h + 32 * s + l] = dl * F32(np.uint8((blk[16 + 32 * h + l] >> (2 * s)) & 3)) - ml


@njit(**KERNEL)
def dequantize_q2_k(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 84 : (b + 1) * 84]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 80)
            dmin = f16_at(blk, 82)
            for h in range(2):
                _deq_q2_plane(blk, y, d, dmin, h, 0)
                _deq_q2_plane(blk, y, d, dmin, h, 1)
                _deq_q2_plane(blk, y, d, dmin, h, 2)
                _deq_q2_plane(blk, y, d, dmin, h, 3)


class Q2_K(JitCodec, qtype="Q2_K", backend="numba"):
    quantize_kernel = staticmethod(quantize_q2_k)
    dequantize_kernel = staticmethod(dequantize_q2_k)


class Q4_K(JitCodec, qtype="Q4_K", backend="numba"):
    quantize_kernel = staticmethod(quantize_q4_k)
    dequantize_kernel = staticmethod(dequantize_q4_k)


class Q5_K(JitCodec, qtype="Q5_K", backend="numba"):
    quantize_kernel = staticmethod(quantize_q5_k)
    dequantize_kernel = staticmethod(dequantize_q5_k)
