"""Compiled symmetric K-quants: Q3_K and Q6_K.

The loops of ggml-quants.c (``quantize_row_q3_K_ref``, ``quantize_row_q3_K_impl``,
``quantize_row_q6_K_ref``, ``quantize_row_q6_K_impl``, ``make_qx_quants``, ``make_q3_quants``,
``dequantize_row_q{3,6}_K``); block layouts and the algorithm in words are in
:mod:`mlxquant.quant.kquants_symmetric`.

Speed: the scale searches run on tiles of ``NB`` super-blocks, one 16-weight sub-block per SIMD
lane (see :func:`qx_quants_lanes`); every lane repeats C's loop for its sub-block in C's order,
so each float32 sum is bit-identical while the lanes hide the latency of the sequential sums.
Rounding uses ggml's ``nearest_int`` in 32-bit form (:func:`nearest_clamp`, exact for any
float, wrapping like C outside +-2**22) or, where the argument is provably below 2**22, the
equivalent float form (:func:`_rint_clamp`).

Huge inputs can make a scale inf, and ggml then stores ``1/iscale`` of ``-0``: the kernels'
IEEE division (``KERNEL``) gives the same instead of raising.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .codec import JitCodec
from .numeric import F32, GROUP_MAX_EPS, KERNEL, MAGIC, f16_at, nearest_int, put_f16

QK_K = 256
HELPER = dict(inline="always", error_model="numpy")


@njit(**HELPER)
def _clamp(l, lo, hi):
    return max(lo, min(hi, l))


@intrinsic
def nearest_clamp(typingctx, v, lo, hi):
    """``(float)MAX(lo, MIN(hi, nearest_int(v)))`` for any float32 ``v`` (ggml's nearest_int,
    wrapping outside +-2**22 as in C), in 32-bit integer operations so that loops vectorize
    wide: the clamp runs on the masked mantissa ``nearest_int(v) + 2**22``, which is monotonic
    in it, and the result (a small integer) is converted back to float exactly."""
    if not (isinstance(v, types.Float) and v.bitwidth == 32):
        return None
    if not (isinstance(lo, types.Integer) and isinstance(hi, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        i32 = ir.IntType(32)
        x, a, b = args
        a = builder.trunc(context.cast(builder, a, sig.args[1], types.int64), i32)
        b = builder.trunc(context.cast(builder, b, sig.args[2], types.int64), i32)
        bias = ir.Constant(i32, 0x400000)
        a = builder.add(a, bias)
        b = builder.add(b, bias)
        t = builder.fadd(x, ir.Constant(f32, 12582912.0))
        m = builder.and_(builder.bitcast(t, i32), ir.Constant(i32, 0x7FFFFF))
        m = builder.select(builder.icmp_signed(">", m, b), b, m)
        m = builder.select(builder.icmp_signed("<", m, a), a, m)
        return builder.fsub(builder.sitofp(m, f32), ir.Constant(f32, 4194304.0))

    return types.float32(v, lo, hi), codegen


@njit(**HELPER)
def qx_quants_cands(nmax, x, w, L, cs):
    """ggml's make_qx_quants(16, nmax, x, L, 1, w) for one group: returns the scale; ``L`` gets
    ``nmax + l`` (all 0 for an all-zero group). The 19 candidate scales are SIMD lanes (scratch
    ``cs`` (3, 24)), each summed in C's order; then C's sequential choice among them. Any float
    input (the Q3_K sub-block scales can be inf or NaN): nearest_int is C's throughout."""
    mx = F32(0)
    amax = F32(0)
    for i in range(16):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(16):
            L[i] = 0
        return F32(0)
    isc = cs[0]
    slx = cs[1]
    sl2 = cs[2]
    fnmax = F32(nmax)
    for c in range(24):
        k = c - 10 if c <= 9 else c - 9  # c = 0: iscale = -nmax/max; then is = -9..-1, 1..9
        num = F32(-nmax) if c == 0 else -(fnmax + F32(0.1) * F32(k))
        isc[c] = num / mx if c < 19 else F32(0)
        slx[c] = F32(0)
        sl2[c] = F32(0)
    for i in range(16):
        xi = x[i]
        wi = w[i]
        wxi = wi * xi
        for c in range(24):
            fl = nearest_clamp(isc[c] * xi, -nmax, nmax - 1)
            slx[c] += wxi * fl
            sl2[c] += wi * fl * fl
    sumlx = slx[0]
    suml2 = sl2[0]
    scale = sumlx / suml2 if suml2 != 0 else F32(0)
    best = scale * sumlx
    best_iscale = isc[0]
    for c in range(1, 19):
        sumlx = slx[c]
        suml2 = sl2[c]
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            best_iscale = isc[c]
            scale = sumlx / suml2
            best = scale * sumlx
    for i in range(16):
        L[i] = nmax + np.int32(nearest_clamp(best_iscale * x[i], -nmax, nmax - 1))
    return scale


@njit(**HELPER)
def _rint_clamp(v, lo, hi):
    """``MAX(lo, MIN(hi, nearest_int(v)))`` as a float, for ``|v| < 2**22`` (then ``v + 1.5*2**23``
    rounds to an integer exactly as nearest_int does and the subtraction is exact)."""
    r = (v + MAGIC) - MAGIC
    r = hi if r > hi else r
    return lo if r < lo else r


# The searches run on a tile of NB super-blocks of a row at once, one sub-block per SIMD lane:
# ``xt[i, g]`` is weight i of sub-block g (lane g = 16*block + sub-block). Each lane runs C's
# loop for its own sub-block in C's order, so every sum is bit-identical, and the many
# independent lanes hide the latency of the loop-carried sums.
NB = 4
LANES = 16 * NB


@njit(**HELPER)
def _to_lanes(src, dst, t):
    """dst[i, 16*t + g] = src[16*g + i] for the 256 values of super-block ``t`` of the tile."""
    for g in range(16):
        for i in range(16):
            dst[i, 16 * t + g] = src[16 * g + i]


@njit(**HELPER)
def _absmax_lanes(ng, xt, amax, mx):
    """Per lane: the largest |x| and the first x that has it (C's ``if (ax > amax)`` scan)."""
    for g in range(ng):
        amax[g] = F32(0)
        mx[g] = F32(0)
    for i in range(16):
        for g in range(ng):
            v = xt[i, g]
            ax = abs(v)
            gt = ax > amax[g]
            amax[g] = ax if gt else amax[g]
            mx[g] = v if gt else mx[g]


@njit(**HELPER)
def qx_quants_lanes(ng, nmax, xt, wt, wxt, L, scales, st):
    """make_qx_quants(16, nmax, x, L, 1, w) on ``ng`` lanes: ``wt`` the weights, ``wxt = wt*xt``
    (C's ``w*x[i]``). The candidate codes stay within [-nmax-1, nmax+1] before clamping
    (``|x| <= |max|``), so :func:`_rint_clamp` is exact. Writes ``scales[g]`` and
    ``L[16*g + i] = nmax + l`` (0 for an all-zero sub-block, whose scale is 0)."""
    amax = st[0]
    mx = st[1]
    slx = st[2]
    sl2 = st[3]
    scale = st[4]
    best = st[5]
    bisc = st[6]
    isc = st[7]
    _absmax_lanes(ng, xt, amax, mx)
    fnmax = F32(nmax)
    lo = F32(-nmax)
    hi = F32(nmax - 1)
    for step in range(19):
        if step == 0:
            c = lo  # iscale = -nmax/max
        else:
            k = step - 10 if step <= 9 else step - 9  # is = -9..-1, 1..9
            c = -(fnmax + F32(0.1) * F32(k))
        for g in range(ng):
            isc[g] = c / mx[g]
            slx[g] = F32(0)
            sl2[g] = F32(0)
        for i in range(16):
            for g in range(ng):
                fl = _rint_clamp(isc[g] * xt[i, g], lo, hi)
                slx[g] += wxt[i, g] * fl
                sl2[g] += wt[i, g] * fl * fl
        if step == 0:
            for g in range(ng):
                sx = slx[g]
                s2 = sl2[g]
                s = sx / s2 if s2 != 0 else F32(0)
                scale[g] = s
                best[g] = s * sx
                bisc[g] = isc[g]
        else:
            for g in range(ng):
                sx = slx[g]
                s2 = sl2[g]
                ok = (s2 > 0) & (sx * sx > best[g] * s2)
                s = sx / s2
                scale[g] = s if ok else scale[g]
                best[g] = s * sx if ok else best[g]
                bisc[g] = isc[g] if ok else bisc[g]
    for g in range(ng):
        zero = amax[g] < GROUP_MAX_EPS
        scales[g] = F32(0) if zero else scale[g]
        b = bisc[g]
        for i in range(16):
            l = nmax + np.int32(_rint_clamp(b * xt[i, g], lo, hi))
            L[16 * g + i] = 0 if zero else l


@njit(**HELPER)
def q3_quants_lanes(ng, xt, wt, wxt, Lf, L, scales, st):
    """make_q3_quants(16, 4, x, L, true) on ``ng`` lanes (``wt = xt*xt``, ``wxt = wt*xt``).
    Sweeps run until no lane changes: a sweep that changes nothing leaves a lane's state as it
    was, so C's per-group ``break`` is implied. ``x*sl2/slx`` can be huge: nearest_int wraps."""
    amax = st[0]
    mx = st[1]
    sumlx = st[2]
    suml2 = st[3]
    chg = st[4]
    isc = st[7]
    _absmax_lanes(ng, xt, amax, mx)
    lo = F32(-4)
    hi = F32(3)
    for g in range(ng):
        isc[g] = lo / mx[g]
        sumlx[g] = F32(0)
        suml2[g] = F32(0)
    for i in range(16):
        for g in range(ng):
            fl = _rint_clamp(isc[g] * xt[i, g], lo, hi)
            Lf[i, g] = fl
            sumlx[g] += wxt[i, g] * fl
            suml2[g] += wt[i, g] * fl * fl
    for itry in range(5):
        for g in range(ng):
            chg[g] = F32(0)
        for i in range(16):
            for g in range(ng):
                w = wt[i, g]
                wx = wxt[i, g]
                li = Lf[i, g]
                sx = sumlx[g]
                s2 = suml2[g]
                slx = sx - wx * li
                sl2 = s2 - w * li * li
                nl = nearest_clamp(xt[i, g] * sl2 / slx, -4, 3)
                slx2 = slx + wx * nl
                sl22 = sl2 + w * nl * nl
                ok = (slx > 0) & (nl != li) & (sl22 > 0) & (slx2 * slx2 * s2 > sx * sx * sl22)
                Lf[i, g] = nl if ok else li
                sumlx[g] = slx2 if ok else sx
                suml2[g] = sl22 if ok else s2
                chg[g] = F32(1) if ok else chg[g]
        changed = F32(0)
        for g in range(ng):
            changed += chg[g]
        if changed == 0:
            break
    for g in range(ng):
        zero = amax[g] < GROUP_MAX_EPS
        s2 = suml2[g]
        s = sumlx[g] / s2 if s2 > 0 else F32(0)
        scales[g] = F32(0) if zero else s
        for i in range(16):
            l = 4 + np.int32(Lf[i, g])
            L[16 * g + i] = 0 if zero else l


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
                _to_lanes(x[r, (b0 + t) * QK_K : (b0 + t + 1) * QK_K], xt, t)
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
                    _to_lanes(weight, wt, t)
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
                            s6[j] = _clamp(l, -32, 31) + 32
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
                _to_lanes(x[r, b * QK_K : (b + 1) * QK_K], xt, t)
                if use_w:  # impl: the imatrix values themselves are the weights
                    _to_lanes(w[b * QK_K : (b + 1) * QK_K], wt, t)
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
