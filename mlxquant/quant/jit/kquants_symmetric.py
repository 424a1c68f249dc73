"""Compiled symmetric K-quants: Q3_K and Q6_K.

The loops of ggml-quants.c (``quantize_row_q3_K_ref``, ``quantize_row_q3_K_impl``,
``quantize_row_q6_K_ref``, ``quantize_row_q6_K_impl``, ``make_qx_quants``, ``make_q3_quants``,
``dequantize_row_q{3,6}_K``); block layouts and the algorithm in words are in
:mod:`mlxquant.quant.numpy.kquants_symmetric`.

Speed: the scale searches (:mod:`.search_scale`) run on tiles of ``NB`` super-blocks, one
16-weight sub-block per SIMD lane; every lane repeats C's loop for its sub-block in C's order,
so each float32 sum is bit-identical while the lanes hide the latency of the sequential sums.

Huge inputs can make a scale inf, and ggml then stores ``1/iscale`` of ``-0``: the kernels'
IEEE division (``KERNEL``) gives the same instead of raising.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .codec import JitCodec
from .numeric import F32, GROUP_MAX_EPS, KERNEL, f16_at, nearest_int, put_f16
from .search_scale import (
    LANES, NB, clamp, nearest_clamp, q3_quants_lanes, qx_quants_cands, qx_quants_lanes, to_lanes,
)

QK_K = 256
HELPER = dict(inline="always", error_model="numpy")


@njit(**HELPER)
def _requantize(xb, dexp, L, nmax):
    """ggml's last pass: ``L[p] = nmax + clamp(nearest_int(x[p]/d))`` where the sub-block scale
    ``d = dexp[p]`` is not 0 (``if (!d) continue``; a NaN ``d`` requantizes, as in C)."""
    for p in range(QK_K):
        dd = dexp[p]
        q = np.int32(nearest_clamp(xb[p] / dd, -nmax, nmax - 1)) + nmax
        L[p] = L[p] if dd == 0 else q


# ------------------------------------------------------------------------------------------------
# Q3_K: 110 bytes per 256 weights (hmask[32], qs[64], scales[12], d fp16)
# ------------------------------------------------------------------------------------------------


@njit(**HELPER)
def _q3_finish(xb, o, L, s6, d, dexp):
    """Store the 16 six-bit scales ``s6`` (0..63) and ``d``, requantize where the sub-block scale
    is not 0, then pack the codes ``L`` (0..7) into ``o`` (110 bytes)."""
    sc = o[96:108]
    sc[:] = 0
    for j in range(16):
        l = s6[j]
        if j < 8:
            sc[j] = l & 0xF
        else:
            sc[j - 8] |= (l & 0xF) << 4
        sc[j % 4 + 8] |= (l >> 4) << (2 * (j // 4))
    dh = put_f16(o, 108, d)
    for j in range(16):
        dd = dh * F32(s6[j] - 32)
        for ii in range(16):
            dexp[16 * j + ii] = dd
    _requantize(xb, dexp, L, 4)
    for m in range(32):
        o[m] = 0
    for b in range(8):
        for m in range(32):
            o[m] |= (L[32 * b + m] >> 2) << b
    for h in range(2):
        for l in range(32):
            p = 128 * h + l
            o[32 + 32 * h + l] = (
                (L[p] & 3) | ((L[p + 32] & 3) << 2)
                | ((L[p + 64] & 3) << 4) | ((L[p + 96] & 3) << 6)
            )


@njit(**KERNEL)
def quantize_q3_k(x, w, out):
    rows, cols = x.shape
    nb = cols // QK_K
    L = np.empty(NB * QK_K, np.uint8)
    scales = np.empty(LANES, np.float32)
    s6 = np.empty(16, np.int64)
    Ls = np.empty(16, np.uint8)
    weight = np.empty(QK_K, np.float32)
    sw = np.empty(LANES, np.float32)
    sumx2 = np.empty(NB, np.float32)
    cs = np.empty((3, 24), np.float32)
    xt = np.empty((16, LANES), np.float32)
    wt = np.empty((16, LANES), np.float32)
    wxt = np.empty((16, LANES), np.float32)
    Lf = np.empty((16, LANES), np.float32)
    st = np.empty((8, LANES), np.float32)
    dexp = np.empty(QK_K, np.float32)
    use_w = w.size > 0
    for r in range(rows):
        for b0 in range(0, nb, NB):
            nt = min(NB, nb - b0)
            ng = 16 * nt
            for t in range(nt):
                to_lanes(x[r, (b0 + t) * QK_K : (b0 + t + 1) * QK_K], xt, t)
            if not use_w:
                # quantize_row_q3_K_ref: make_q3_quants on every sub-block
                for i in range(16):
                    for g in range(ng):
                        v = xt[i, g]
                        ww = v * v
                        wt[i, g] = ww
                        wxt[i, g] = ww * v
                q3_quants_lanes(ng, xt, wt, wxt, Lf, L, scales, st)
            else:
                # quantize_row_q3_K_impl: make_qx_quants weighted by qw * sqrt(sigma2 + x^2).
                # The blocks' sums of x^2 run side by side (each in C's order) to hide latency.
                for t in range(nt):
                    sumx2[t] = F32(0)
                xr = x[r, b0 * QK_K : (b0 + nt) * QK_K]
                for j in range(QK_K):
                    for t in range(nt):
                        v = xr[QK_K * t + j]
                        sumx2[t] += v * v
                for t in range(nt):
                    b = b0 + t
                    xb = x[r, b * QK_K : (b + 1) * QK_K]
                    qw = w[b * QK_K : (b + 1) * QK_K]
                    sigma2 = F32(2) * sumx2[t] / F32(QK_K)
                    for j in range(QK_K):
                        weight[j] = qw[j] * np.sqrt(sigma2 + xb[j] * xb[j])
                    to_lanes(weight, wt, t)
                for g in range(ng):
                    sw[g] = F32(0)
                for i in range(16):
                    for g in range(ng):
                        sw[g] += wt[i, g]
                for i in range(16):
                    for g in range(ng):
                        wxt[i, g] = wt[i, g] * xt[i, g]
                qx_quants_lanes(ng, 4, xt, wt, wxt, L, scales, st)
            for t in range(nt):
                b = b0 + t
                xb = x[r, b * QK_K : (b + 1) * QK_K]
                o = out[r, b * 110 : (b + 1) * 110]
                sct = scales[16 * t : 16 * t + 16]
                if not use_w:
                    max_scale = F32(0)
                    amax = F32(0)
                    for j in range(16):
                        a = abs(sct[j])
                        if a > amax:
                            amax = a
                            max_scale = sct[j]
                    if max_scale != 0:
                        iscale = F32(-32) / max_scale
                        for j in range(16):
                            l = ((nearest_int(iscale * sct[j]) + 128) & 0xFF) - 128  # (int8_t)
                            s6[j] = clamp(l, -32, 31) + 32
                        d = F32(1) / iscale
                    else:
                        for j in range(16):
                            s6[j] = 0
                        d = F32(0)
                else:
                    # the 16 scales quantized to 6 bits, weighted by the sub-blocks' sums of weights
                    d = qx_quants_cands(32, sct, sw[16 * t : 16 * t + 16], Ls, cs)
                    for j in range(16):
                        s6[j] = Ls[j]
                _q3_finish(xb, o, L[QK_K * t : QK_K * (t + 1)], s6, d, dexp)


@njit(**KERNEL)
def dequantize_q3_k(data, out):
    """``y = (d * (s - 32)) * (q - 4)``, as C computes it: codes and per-weight scales first,
    then one long loop that vectorizes."""
    rows, cols = out.shape
    dexp = np.empty(QK_K, np.float32)
    q = np.empty(QK_K, np.uint8)
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 110 : (b + 1) * 110]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d_all = f16_at(blk, 108)
            sc = blk[96:108]
            for j in range(16):
                if j < 8:
                    lo = np.int64(sc[j]) & 0xF
                else:
                    lo = np.int64(sc[j - 8]) >> 4
                s = lo | (((np.int64(sc[8 + j % 4]) >> (2 * (j // 4))) & 3) << 4)
                dl = d_all * F32(s - 32)
                for i in range(16):
                    dexp[16 * j + i] = dl
            for h in range(2):
                for l in range(32):
                    a = blk[32 + 32 * h + l]
                    m = blk[l] >> (4 * h)
                    q[128 * h + l] = (a & 3) | ((m & 1) << 2)
                    q[128 * h + 32 + l] = ((a >> 2) & 3) | ((m & 2) << 1)
                    q[128 * h + 64 + l] = ((a >> 4) & 3) | (m & 4)
                    q[128 * h + 96 + l] = (a >> 6) | ((m & 8) >> 1)
            for p in range(QK_K):
                y[p] = dexp[p] * (F32(q[p]) - F32(4))  # exact: small integers


class Q3_K(JitCodec, qtype="Q3_K", backend="numba"):
    quantize_kernel = staticmethod(quantize_q3_k)
    dequantize_kernel = staticmethod(dequantize_q3_k)


# ------------------------------------------------------------------------------------------------
# Q6_K: 210 bytes per 256 weights (ql[128], qh[64], scales[16] int8, d fp16)
# ------------------------------------------------------------------------------------------------


@njit(**HELPER)
def _q6_finish(xb, o, L, scales, sc, dexp):
    """The block scale, the int8 sub-block scales, requantization and packing (210 bytes)."""
    max_scale = F32(0)
    max_abs = F32(0)
    for ib in range(16):
        s = scales[ib]
        a = abs(s)
        if a > max_abs:
            max_abs = a
            max_scale = s
    if max_abs < GROUP_MAX_EPS:
        o[:] = 0
        return
    iscale = F32(-128) / max_scale
    dh = put_f16(o, 208, F32(1) / iscale)
    for ib in range(16):
        v = ((min(127, nearest_int(iscale * scales[ib])) + 128) & 0xFF) - 128  # (int8_t)
        sc[ib] = v
        o[192 + ib] = v & 0xFF
    for j in range(16):
        d = dh * F32(sc[j])
        for ii in range(16):
            dexp[16 * j + ii] = d
    _requantize(xb, dexp, L, 32)
    for h in range(2):
        for l in range(32):
            p = 128 * h + l
            o[64 * h + l] = (L[p] & 0xF) | ((L[p + 64] & 0xF) << 4)
            o[64 * h + 32 + l] = (L[p + 32] & 0xF) | ((L[p + 96] & 0xF) << 4)
            o[128 + 32 * h + l] = (
                (L[p] >> 4) | ((L[p + 32] >> 4) << 2)
                | ((L[p + 64] >> 4) << 4) | ((L[p + 96] >> 4) << 6)
            )


@njit(**KERNEL)
def quantize_q6_k(x, w, out):
    rows, cols = x.shape
    nb = cols // QK_K
    L = np.empty(NB * QK_K, np.uint8)
    scales = np.empty(LANES, np.float32)
    sc = np.empty(16, np.int64)
    xt = np.empty((16, LANES), np.float32)
    wt = np.empty((16, LANES), np.float32)
    wxt = np.empty((16, LANES), np.float32)
    st = np.empty((8, LANES), np.float32)
    dexp = np.empty(QK_K, np.float32)
    use_w = w.size > 0
    for r in range(rows):
        for b0 in range(0, nb, NB):
            nt = min(NB, nb - b0)
            ng = 16 * nt
            for t in range(nt):
                b = b0 + t
                to_lanes(x[r, b * QK_K : (b + 1) * QK_K], xt, t)
                if use_w:  # impl: the imatrix values themselves are the weights
                    to_lanes(w[b * QK_K : (b + 1) * QK_K], wt, t)
            if not use_w:  # ref (or impl without weights): C's x[i]*x[i]
                for i in range(16):
                    for g in range(ng):
                        wt[i, g] = xt[i, g] * xt[i, g]
            for i in range(16):
                for g in range(ng):
                    wxt[i, g] = wt[i, g] * xt[i, g]
            qx_quants_lanes(ng, 32, xt, wt, wxt, L, scales, st)
            for t in range(nt):
                b = b0 + t
                xb = x[r, b * QK_K : (b + 1) * QK_K]
                o = out[r, b * 210 : (b + 1) * 210]
                Lb = L[QK_K * t : QK_K * (t + 1)]
                _q6_finish(xb, o, Lb, scales[16 * t : 16 * t + 16], sc, dexp)


@njit(**KERNEL)
def dequantize_q6_k(data, out):
    """``y = (d * sc) * (q - 32)``, as C computes it: codes and per-weight scales first, then
    one long loop that vectorizes."""
    rows, cols = out.shape
    dexp = np.empty(QK_K, np.float32)
    q = np.empty(QK_K, np.uint8)
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 210 : (b + 1) * 210]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 208)
            for j in range(16):
                s = np.int32(blk[192 + j])
                s = s - 256 if s >= 128 else s  # int8_t
                dl = d * F32(s)
                for i in range(16):
                    dexp[16 * j + i] = dl
            for h in range(2):
                for l in range(32):
                    a = blk[64 * h + l]
                    c = blk[64 * h + 32 + l]
                    e = blk[128 + 32 * h + l]
                    q[128 * h + l] = (a & 0xF) | ((e & 3) << 4)
                    q[128 * h + 32 + l] = (c & 0xF) | (((e >> 2) & 3) << 4)
                    q[128 * h + 64 + l] = (a >> 4) | (((e >> 4) & 3) << 4)
                    q[128 * h + 96 + l] = (c >> 4) | (((e >> 6) & 3) << 4)
            for p in range(QK_K):
                y[p] = dexp[p] * (F32(q[p]) - F32(32))  # exact: small integers


class Q6_K(JitCodec, qtype="Q6_K", backend="numba"):
    quantize_kernel = staticmethod(quantize_q6_k)
    dequantize_kernel = staticmethod(dequantize_q6_k)
