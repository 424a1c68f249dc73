"""Compiled scale searches of the symmetric K-quants (:mod:`.kquants_symmetric`): ggml's
``make_qx_quants`` and ``make_q3_quants`` on the 16-weight sub-blocks of a tile of super-blocks,
one sub-block per SIMD lane, each lane in C's order. The NumPy reference is
:mod:`mlxquant.quant.numpy.search_scale`.

Rounding uses ggml's ``nearest_int`` in 32-bit form (:func:`nearest_clamp`, exact for any float,
wrapping like C outside +-2**22) or, where the argument is provably below 2**22, the equivalent
float form (:func:`_rint_clamp`).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .numeric import F32, GROUP_MAX_EPS, MAGIC

QK_K = 256
HELPER = dict(inline="always", error_model="numpy")


@njit(**HELPER)
def clamp(l, lo, hi):
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
def to_lanes(src, dst, t):
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
