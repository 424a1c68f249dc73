"""Compiled scale/min searches of the affine K-quants (:mod:`.kquants_affine`): ggml's
``make_qkx2_quants`` / ``make_qkx3_quants`` on many sub-blocks at once (:func:`search_lanes`) and
``make_qp_quants``. The NumPy reference is :mod:`mlxquant.quant.numpy.search_scale_min`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .numeric import F32, GROUP_MAX_EPS, KERNEL, nearest_int

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
