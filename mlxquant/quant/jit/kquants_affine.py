"""Compiled K-quants with a scale and a min per sub-block: Q2_K, Q4_K, Q5_K.

The loops of ggml-quants.c (``quantize_row_q*_K_ref``, ``quantize_row_q*_K_impl``,
``make_qkx2_quants``, ``make_qkx3_quants``, ``make_qp_quants``, ``dequantize_row_q*_K``); block
layouts and the algorithm in words are in :mod:`mlxquant.quant.kquants_affine`.

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
from .numeric import F32, GROUP_MAX_EPS, KERNEL, f16_at, nearest_int, put_f16

QK_K = 256


# -- the solvers ----------------------------------------------------------------------------------
LANES = 128  # sub-blocks searched side by side (SIMD lanes) by :func:`search_lanes`


@njit(**KERNEL)
def lane_scratch(ng):
    """The per-group state of :func:`search_lanes`, 15 separate float32[ng] arrays (separate
    buffers, so that LLVM's alias checks stay cheap): 0 min (on return -min, ggml's
    ``*the_min``), 1 max, 2 sum_w, 3 sum_x, 4 iscale, 5 scale (the result), 6 best error,
    7 iscale of the best step, 8 min of the best step, 9 sum_l then D, 10 sum_l2, 11 sum_xl,
    12 this_scale, 13 this_min, 14 cur_error."""
    return (np.empty(ng, np.float32), np.empty(ng, np.float32), np.empty(ng, np.float32),
            np.empty(ng, np.float32), np.empty(ng, np.float32), np.empty(ng, np.float32),
            np.empty(ng, np.float32), np.empty(ng, np.float32), np.empty(ng, np.float32),
            np.empty(ng, np.float32), np.empty(ng, np.float32), np.empty(ng, np.float32),
            np.empty(ng, np.float32), np.empty(ng, np.float32), np.empty(ng, np.float32))


@njit(**KERNEL)
def search_lanes(X, W, ng, n, nmax, rmin, rdelta, nstep, use_mad, V, Lf, Lout, flat):
    """ggml's make_qkx2_quants / make_qkx3_quants (with weights) on ``ng`` groups at once.

    ``X, W``: float32[n, >= ng], position-major (group ``g`` is column ``g``), so every loop
    below runs over the groups innermost: each group keeps its own sequential float32 sums in
    ggml's order (bit-exact), and the loops vectorize across groups. qkx2 tests ``max == min``
    and qkx3 ``max <= min``: the same for finite input (``max >= min`` always holds).
    Results: scale in ``V[5]``, ``-min`` in ``V[0]``, codes in ``Lout[:n, :ng]``. The codes of
    the best step are recomputed at the end from its (iscale, min): they are a function of those.
    ``use_mad`` weighs |diff| instead of diff^2.
    """
    mn, mx, sw, sx, isc, scale, best, bis, bmn, sl, sl2, sxl, ts, tm, ce = V
    for g in range(ng):
        mn[g] = X[0, g]
        mx[g] = X[0, g]
        sw[g] = W[0, g]
        sx[g] = W[0, g] * X[0, g]
    for i in range(1, n):
        for g in range(ng):
            xi = X[i, g]
            a = mn[g]
            mn[g] = xi if xi < a else a
            b = mx[g]
            mx[g] = xi if xi > b else b
            w = W[i, g]
            sw[g] += w
            sx[g] += w * xi
    fnmax = F32(nmax)
    for g in range(ng):
        m = mn[g]
        if m > 0:
            m = F32(0)
        mn[g] = m
        bmn[g] = m
        best[g] = F32(0)
        f = mx[g] <= m
        flat[g] = f
        if f:  # ggml returns early: codes 0, scale 0, the_min = -min (masked at the end)
            isc[g] = F32(0)
            scale[g] = F32(0)
        else:
            i0 = fnmax / (mx[g] - m)
            isc[g] = i0
            scale[g] = F32(1) / i0
        bis[g] = isc[g]
    for i in range(n):
        for g in range(ng):
            xi = X[i, g]
            m = mn[g]
            l = F32(max(0, min(nmax, nearest_int(isc[g] * (xi - m)))))
            diff = scale[g] * l + m - xi
            diff = abs(diff) if use_mad else diff * diff
            best[g] += W[i, g] * diff
    for step in range(nstep + 1):
        num = rmin + rdelta * F32(step) + fnmax
        for g in range(ng):
            isc[g] = num / (mx[g] - mn[g])
            sl[g] = F32(0)
            sl2[g] = F32(0)
            sxl[g] = F32(0)
        for i in range(n):
            for g in range(ng):
                xi = X[i, g]
                l = F32(max(0, min(nmax, nearest_int(isc[g] * (xi - mn[g])))))
                Lf[i, g] = l
                wl = W[i, g] * l
                sl[g] += wl
                sl2[g] += wl * l
                sxl[g] += wl * xi
        for g in range(ng):
            s_w = sw[g]
            s_l = sl[g]
            s_l2 = sl2[g]
            s_xl = sxl[g]
            s_x = sx[g]
            D = s_w * s_l2 - s_l * s_l
            this_scale = (s_w * s_xl - s_x * s_l) / D
            this_min = (s_l2 * s_x - s_l * s_xl) / D
            if this_min > 0:
                this_min = F32(0)
                this_scale = s_xl / s_l2
            ts[g] = this_scale
            tm[g] = this_min
            ce[g] = F32(0)
            sl[g] = D
        for i in range(n):
            for g in range(ng):
                diff = ts[g] * Lf[i, g] + tm[g] - X[i, g]
                diff = abs(diff) if use_mad else diff * diff
                ce[g] += W[i, g] * diff
        for g in range(ng):
            if sl[g] > 0 and ce[g] < best[g] and not flat[g]:
                best[g] = ce[g]
                scale[g] = ts[g]
                bis[g] = isc[g]
                bmn[g] = mn[g]
                mn[g] = tm[g]
    for i in range(n):
        for g in range(ng):
            l = max(0, min(nmax, nearest_int(bis[g] * (X[i, g] - bmn[g]))))
            Lout[i, g] = 0 if flat[g] else l
    for g in range(ng):
        mn[g] = -mn[g]


@njit(inline="always")
def make_qp_quants(n, nmax, x, L, qw):
    """ggml's make_qp_quants: a scale without min for the sub-block scales / mins.

    Codes are stored as uint8 (C's modular cast); the sums use the int code where C does.
    """
    mx = F32(0)
    for i in range(n):
        mx = mx if mx > x[i] else x[i]  # MAX(max, x[i])
    if mx < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0)
    fnmax = F32(nmax)
    iscale = fnmax / mx
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 0xFF
    scale = F32(1) / iscale
    best_mse = F32(0)
    for i in range(n):
        diff = x[i] - scale * F32(L[i])
        best_mse += qw[i] * diff * diff
    for s in range(-4, 5):
        if s == 0:
            continue
        iscale_is = (F32(0.1) * F32(s) + fnmax) / mx
        scale_is = F32(1) / iscale_is
        mse = F32(0)
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * F32(l)
            mse += qw[i] * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F32(0)
    suml2 = F32(0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        fl = F32(l)
        w = qw[i]
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            li = np.int64(L[i])
            fli = F32(li)
            slx = sumlx - w * x[i] * fli
            sl2 = suml2 - w * fli * fli
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != li:
                    fnl = F32(new_l)
                    slx += w * x[i] * fnl
                    sl2 += w * fnl * fnl
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > 0 else F32(0)


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
