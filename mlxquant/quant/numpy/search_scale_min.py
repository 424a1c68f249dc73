"""Vectorized twins of ggml's scale(+min) search solvers: ``make_qkx2_quants``,
``make_qkx3_quants`` and ``make_qp_quants`` (ggml-quants.c).

Each ggml solver works on one group of ``k`` weights; here every function solves ``n`` groups at
once and returns exactly ggml's float32 results and codes. What keeps them bit-exact:

* every accumulation is sequential float32 in ggml's loop order (``s = 0; s += a[i]``);
* ``a*b*c`` keeps C's left-to-right grouping (``(a*b)*c``); no fused multiply-add;
* ``nearest_int`` is ggml's magic-number rounding (half to even);
* the search of ``make_qkx*`` uses the *updated* min in later steps, and a group whose
  ``max == min`` keeps all-zero codes and scale 0;
* ``make_qp_quants`` stores codes as ``uint8`` (C's modular cast) but sums with the ``int`` code.

Internally the arrays are position-major, ``(k, n)``: position ``i`` of every group is one
contiguous row, so a sequential sum over positions is ``k`` vector additions (one NumPy
reduction over axis 0, see :func:`~.numeric.seq_sum`).
"""

from __future__ import annotations

import numpy as np

from .numeric import F32, GROUP_MAX_EPS, nearest_int_c, seq_sum

_NINT_LIMIT = F32(4194303.0)  # ggml's nearest_int is exact rounding up to this magnitude

# The clip ufunc itself: np.clip's Python wrapper costs as much as the clip of a search tile.
_clip = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", np.clip)


def _first_min_max(xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's ``min = max = x[0]; if (x[i] < min) ...; if (x[i] > max) ...`` over axis 0.

    The first element attaining the extreme wins, which fixes the sign of a zero extreme.
    """
    cols = np.arange(xt.shape[1])
    mn = xt[np.argmin(xt, axis=0), cols]
    mx = xt[np.argmax(xt, axis=0), cols]
    return mn, mx


def qkx_search_t(
    xt: np.ndarray,
    wt: np.ndarray,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``make_qkx2_quants`` / ``make_qkx3_quants`` on position-major groups.

    Args:
        xt: (k, n) float32, position-major groups.
        wt: (k, n) float32 weights (for qkx3's default pass ``xt * xt``).
    Returns:
        scale (n,) float32, the_min (n,) float32 (= -min, ggml's ``*the_min``),
        Lt (k, n) uint8 codes.
    """
    xt = np.ascontiguousarray(xt, dtype=F32)
    wt = np.ascontiguousarray(wt, dtype=F32)
    fnmax = F32(nmax)

    mn, mx = _first_min_max(xt)                                    # (n,) each
    sum_w = wt[0].copy()
    sum_x = sum_w * xt[0]
    for i in range(1, xt.shape[0]):
        sum_w += wt[i]
        sum_x += wt[i] * xt[i]
    mn_x = mn                                                      # smallest x (bounds)
    mn = np.where(mn > 0, F32(0.0), mn)
    flat = ~(mx > mn)                                              # (n,) max == min
    # flat groups return early in ggml: give them harmless values and mask them at the end
    mn_safe = np.where(flat, F32(-1.0), mn)
    mx_safe = np.where(flat, F32(0.0), mx)
    ends = np.stack([np.where(flat, F32(-1.0), mn_x), mx_safe])    # (2, n) smallest, largest x

    V = np.empty_like(xt)                                          # (k, n) work buffers
    T = np.empty_like(xt)
    WL = np.empty_like(xt)

    def codes(iscale: np.ndarray, m: np.ndarray, out: np.ndarray) -> np.ndarray:
        # MAX(0, MIN(nmax, nearest_int(iscale*(x - min)))) as float32 codes. np.rint equals
        # ggml's nearest_int for |v| <= 4194303; rounding is monotone, so the group's bounds
        # iscale*(min_x - m), iscale*(max_x - m) tell which groups (overflow, inf, nan) need
        # the exact bit trick instead.
        np.subtract(xt, m, out=out)
        np.multiply(out, iscale, out=out)
        bounds = np.abs(iscale * (ends - m))                       # (2, n)
        exact = None
        if not (bounds <= _NINT_LIMIT).all():                      # never for sane data
            odd = ~(bounds <= _NINT_LIMIT).all(axis=0)
            exact = nearest_int_c(out[:, odd])
        np.rint(out, out=out)
        if exact is not None:
            out[:, odd] = exact
        _clip(out, F32(0.0), fnmax, out=out)
        return out

    def error(scale: np.ndarray, m: np.ndarray, Lf: np.ndarray) -> np.ndarray:
        # sum_i w*diff, diff = scale*L + min - x (squared or absolute)
        d = np.multiply(Lf, scale, out=T)
        d += m
        d -= xt
        if use_mad:
            np.abs(d, out=d)
        else:
            d *= d
        d *= wt
        return seq_sum(d, axis=0)

    with np.errstate(all="ignore"):
        iscale = fnmax / (mx_safe - mn_safe)
        scale = F32(1.0) / iscale
        best_err = error(scale, mn_safe, codes(iscale, mn_safe, V))
        # the codes of the best step are recomputed at the end from its (iscale, min)
        best_is, best_m = iscale, mn_safe
        cur_min = mn_safe
        if nstep >= 1:
            frmin, frdelta = F32(rmin), F32(rdelta)
            for step in range(nstep + 1):
                num = (frmin + frdelta * F32(step)) + fnmax
                iscale = num / (mx_safe - cur_min)
                Lf = codes(iscale, cur_min, V)
                np.multiply(wt, Lf, out=WL)
                sum_l = seq_sum(WL, axis=0)
                sum_l2 = seq_sum(np.multiply(WL, Lf, out=T), axis=0)
                sum_xl = seq_sum(np.multiply(WL, xt, out=T), axis=0)
                D = sum_w * sum_l2 - sum_l * sum_l
                this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
                this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
                pos = this_min > 0
                this_min = np.where(pos, F32(0.0), this_min)
                this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
                cur_err = error(this_scale, this_min, Lf)
                better = (D > 0) & (cur_err < best_err)
                if better.any():
                    best_err = np.where(better, cur_err, best_err)
                    best_is = np.where(better, iscale, best_is)
                    best_m = np.where(better, cur_min, best_m)
                    scale = np.where(better, this_scale, scale)
                    cur_min = np.where(better, this_min, cur_min)
        Lt = codes(best_is, best_m, V).astype(np.uint8)

    scale = np.where(flat, F32(0.0), scale).astype(F32)
    the_min = -np.where(flat, mn, cur_min).astype(F32)
    Lt[:, flat] = 0
    return scale, the_min, Lt


def make_qkx2_quants(
    x: np.ndarray,
    weights: np.ndarray,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's ``make_qkx2_quants`` on ``n`` groups at once: the search of
    :func:`make_qkx3_quants` with explicit weights.

    Args:
        x: (n, k) float32 groups.
        weights: (n, k) float32 per-weight error weights.
        nmax: largest code (3, 15, 31); rmin, rdelta, nstep: the search grid
            ``iscale = (rmin + rdelta*is + nmax)/(max - min)`` for ``is = 0..nstep``;
        use_mad: weighted absolute error instead of squared error.
    Returns:
        scale (n,) float32, the_min (n,) float32 (``-min``, >= 0 up to the sign of zero),
        L (n, k) uint8 codes as ggml leaves them.
    """
    return make_qkx3_quants(x, weights, nmax, rmin, rdelta, nstep, use_mad)


def make_qkx3_quants(
    x: np.ndarray,
    weights: np.ndarray | None,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's ``make_qkx3_quants``: as :func:`make_qkx2_quants`, weights ``None`` means ``x*x``."""
    x = np.asarray(x, dtype=F32)
    w = x * x if weights is None else np.asarray(weights, dtype=F32)
    scale, the_min, Lt = qkx_search_t(x.T, w.T, nmax, rmin, rdelta, nstep, use_mad)
    return scale, the_min, np.ascontiguousarray(Lt.T)


def make_qp_quants(
    x: np.ndarray, nmax: int, quant_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ggml's ``make_qp_quants``: a scale without min for non-negative values (sub-block scales).

    Args:
        x: (n, k) float32 groups (ggml passes sub-block scales or mins, k = 8 or 16).
        nmax: largest code (15 or 63).
        quant_weights: (n, k) float32 weights.
    Returns:
        scale (n,) float32 and L (n, k) uint8 (C's modular cast of the int code).
    """
    xt = np.ascontiguousarray(np.asarray(x, dtype=F32).T)          # (k, n)
    wt = np.ascontiguousarray(np.asarray(quant_weights, dtype=F32).T)
    k, n = xt.shape
    fnmax = F32(nmax)
    imax = np.int32(nmax)

    mx = np.max(xt, axis=0)
    mx = np.where(mx > 0, mx, F32(0.0))                            # max = MAX(0, x[i]...)
    zero = mx < GROUP_MAX_EPS                                      # (n,)
    mx_safe = np.where(zero, F32(1.0), mx)

    with np.errstate(all="ignore"):
        iscale = fnmax / mx_safe
        Lu = nearest_int_c(iscale * xt).astype(np.uint8)           # L[i] = nearest_int(...)
        scale = F32(1.0) / iscale
        diff = xt - scale * Lu.astype(F32)
        best = seq_sum(wt * diff * diff, axis=0)
        for s in (-4, -3, -2, -1, 1, 2, 3, 4):
            iscale_is = (F32(0.1) * F32(s) + fnmax) / mx_safe
            scale_is = F32(1.0) / iscale_is
            li = np.minimum(imax, nearest_int_c(iscale_is * xt))
            diff = xt - scale_is * li.astype(F32)
            mse = seq_sum(wt * diff * diff, axis=0)
            better = mse < best
            best = np.where(better, mse, best)
            iscale = np.where(better, iscale_is, iscale)

        li = np.minimum(imax, nearest_int_c(iscale * xt))          # (k, n) int32
        Lu = li.astype(np.uint8)
        lf = li.astype(F32)
        sumlx = seq_sum(wt * xt * lf, axis=0)
        suml2 = seq_sum(wt * lf * lf, axis=0)
        wx = wt * xt
        for _ in range(5):
            changed = False
            for i in range(k):
                w, xi = wt[i], xt[i]
                Li = Lu[i].astype(F32)
                slx = sumlx - wx[i] * Li
                sl2 = suml2 - w * Li * Li
                ok = (slx > 0) & (sl2 > 0)
                new_l = np.minimum(imax, nearest_int_c(xi * sl2 / slx))
                ok &= new_l != Lu[i].astype(np.int32)
                nf = new_l.astype(F32)
                slx = slx + wx[i] * nf
                sl2 = sl2 + w * nf * nf
                ok &= slx * slx * suml2 > sumlx * sumlx * sl2
                if ok.any():
                    changed = True
                    Lu[i] = np.where(ok, new_l.astype(np.uint8), Lu[i])
                    sumlx = np.where(ok, slx, sumlx)
                    suml2 = np.where(ok, sl2, suml2)
            if not changed:  # a pass without change leaves every group's state as it was
                break
        out = np.where(suml2 > 0, sumlx / suml2, F32(0.0))

    out = np.where(zero, F32(0.0), out).astype(F32)
    Lu[:, zero] = 0
    return out, np.ascontiguousarray(Lu.T)
