"""MLX twins of ggml's scale(+min) search solvers (``mlxquant/quant/numpy/search_scale_min.py``):
``make_qkx2_quants``, ``make_qkx3_quants`` and ``make_qp_quants`` on ``mx.array`` groups.

Same algorithm, same float32 results and codes as the NumPy reference (and so as ggml). What
keeps them bit-exact on MLX:

* every ggml accumulation ``s = 0; s += a[i]`` is a chain of elementwise adds over position
  slices (:func:`~.numeric.seq_sum`); MLX's own reductions (``mx.sum``) have no specified order;
* ``a*b*c`` keeps C's left-to-right grouping, one elementwise op per C operator. Nothing here is
  ``mx.compile``d: a fused kernel may contract ``a*b + c`` into a fused multiply-add (the Metal
  compiler may do so in fused code), which changes rounding decisions;
* ``nearest_int`` is ggml's magic-number bit trick itself (:func:`nearest_int_c`), so even
  out-of-range values (overflow, inf, NaN on extreme inputs) wrap exactly like the C code;
* min/max follow ggml's ``if (x[i] < min) min = x[i]`` scan (the first extreme wins, which fixes
  the sign of a zero extreme);
* ``make_qp_quants`` keeps codes as ``uint8`` (C's modular cast) but sums with the ``int`` code.

Arrays are position-major internally, ``(k, n)``: position ``i`` of every group is one contiguous
row, so a sequential sum over positions is ``k`` vector additions.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .numeric import GROUP_MAX_EPS, nearest_int_c, seq_sum

_F32 = np.float32


def _c(v) -> float:
    """A float32 constant as a Python float (exact), so MLX combines it in float32."""
    return float(_F32(v))


def _first_min_max(xt: mx.array) -> tuple[mx.array, mx.array]:
    """``min = max = x[0]; if (x[i] < min) min = x[i]; if (x[i] > max) max = x[i]`` over axis 0."""
    mn = mxv = xt[0]
    for i in range(1, xt.shape[0]):
        xi = xt[i]
        mn = mx.where(xi < mn, xi, mn)
        mxv = mx.where(xi > mxv, xi, mxv)
    return mn, mxv


def qkx_search_t(
    xt: mx.array,
    wt: mx.array,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[mx.array, mx.array, mx.array]:
    """``make_qkx2_quants`` / ``make_qkx3_quants`` on position-major groups.

    Args:
        xt: (k, n) float32, position-major groups.
        wt: (k, n) float32 weights (for qkx3's default pass ``xt * xt``).
    Returns:
        scale (n,) float32, the_min (n,) float32 (= -min, ggml's ``*the_min``),
        Lt (k, n) uint8 codes.
    """
    xt = mx.contiguous(xt.astype(mx.float32))
    wt = mx.contiguous(wt.astype(mx.float32))
    k = xt.shape[0]
    fnmax = float(nmax)

    mn, mxv = _first_min_max(xt)                                   # (n,) each
    sum_w = wt[0]
    sum_x = sum_w * xt[0]
    for i in range(1, k):
        sum_w = sum_w + wt[i]
        sum_x = sum_x + wt[i] * xt[i]
    mn = mx.where(mn > 0, 0.0, mn)
    flat = mx.logical_not(mxv > mn)                                # (n,) max == min
    # flat groups return early in ggml: give them harmless values and mask them at the end
    mn_safe = mx.where(flat, -1.0, mn)
    mx_safe = mx.where(flat, 0.0, mxv)

    def codes(iscale: mx.array, m: mx.array) -> mx.array:
        # MAX(0, MIN(nmax, nearest_int(iscale*(x - min)))) as float32 codes, (k, n)
        l = nearest_int_c((xt - m) * iscale)
        return mx.clip(l, 0, nmax).astype(mx.float32)

    def error(scale: mx.array, m: mx.array, Lf: mx.array) -> mx.array:
        # sum_i w*diff, diff = scale*L + min - x (squared or absolute)
        d = (Lf * scale + m) - xt
        d = mx.abs(d) if use_mad else d * d
        return seq_sum(wt * d, axis=0)

    iscale = fnmax / (mx_safe - mn_safe)
    scale = 1.0 / iscale
    best_err = error(scale, mn_safe, codes(iscale, mn_safe))
    # the codes of the best step are recomputed at the end from its (iscale, min)
    best_is, best_m = iscale, mn_safe
    cur_min = mn_safe
    if nstep >= 1:
        frmin, frdelta = _F32(rmin), _F32(rdelta)
        ones = mx.ones_like(xt)
        for step in range(nstep + 1):
            num = float((frmin + frdelta * _F32(step)) + _F32(nmax))
            iscale = num / (mx_safe - cur_min)
            Lf = codes(iscale, cur_min)
            wl = wt * Lf
            # sum_l, sum_l2, sum_xl in one sequential pass: (k, 3, n) products w*l*{1, l, x}
            sums = seq_sum(wl[:, None, :] * mx.stack([ones, Lf, xt], axis=1), axis=0)
            sum_l, sum_l2, sum_xl = sums[0], sums[1], sums[2]
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_min = mx.where(pos, 0.0, this_min)
            this_scale = mx.where(pos, sum_xl / sum_l2, this_scale)
            cur_err = error(this_scale, this_min, Lf)
            better = mx.logical_and(D > 0, cur_err < best_err)
            best_err = mx.where(better, cur_err, best_err)
            best_is = mx.where(better, iscale, best_is)
            best_m = mx.where(better, cur_min, best_m)
            scale = mx.where(better, this_scale, scale)
            cur_min = mx.where(better, this_min, cur_min)
    Lt = codes(best_is, best_m).astype(mx.uint8)

    scale = mx.where(flat, 0.0, scale)
    the_min = -mx.where(flat, mn, cur_min)
    Lt = mx.where(flat[None, :], mx.array(0, mx.uint8), Lt)
    return scale, the_min, Lt


def make_qkx2_quants(
    x: mx.array,
    weights: mx.array,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[mx.array, mx.array, mx.array]:
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
    x: mx.array,
    weights: mx.array | None,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[mx.array, mx.array, mx.array]:
    """ggml's ``make_qkx3_quants``: as :func:`make_qkx2_quants`, weights ``None`` means ``x*x``."""
    x = mx.array(x).astype(mx.float32) if not isinstance(x, mx.array) else x.astype(mx.float32)
    if weights is None:
        w = x * x
    else:
        w = (weights if isinstance(weights, mx.array) else mx.array(weights)).astype(mx.float32)
    scale, the_min, Lt = qkx_search_t(x.T, w.T, nmax, rmin, rdelta, nstep, use_mad)
    return scale, the_min, mx.contiguous(Lt.T)


def make_qp_quants(
    x: mx.array, nmax: int, quant_weights: mx.array
) -> tuple[mx.array, mx.array]:
    """ggml's ``make_qp_quants``: a scale without min for non-negative values (sub-block scales).

    Args:
        x: (n, k) float32 groups (ggml passes sub-block scales or mins, k = 8 or 16).
        nmax: largest code (15 or 63).
        quant_weights: (n, k) float32 weights.
    Returns:
        scale (n,) float32 and L (n, k) uint8 (C's modular cast of the int code).

    The coordinate-descent passes stop early only when no group changed in a pass (one host
    sync per pass); a group that did not change would not change in a later pass either.
    """
    x = x if isinstance(x, mx.array) else mx.array(x)
    qw = quant_weights if isinstance(quant_weights, mx.array) else mx.array(quant_weights)
    xt = mx.contiguous(x.astype(mx.float32).T)                     # (k, n)
    wt = mx.contiguous(qw.astype(mx.float32).T)
    k = xt.shape[0]
    fnmax = float(nmax)

    mxv = mx.max(xt, axis=0)                                       # order-free: only > 0 matters
    mxv = mx.where(mxv > 0, mxv, 0.0)                              # max = MAX(0, x[i]...)
    zero = mxv < GROUP_MAX_EPS                                    # (n,)
    mx_safe = mx.where(zero, 1.0, mxv)

    iscale = fnmax / mx_safe
    Lu = nearest_int_c(iscale * xt).astype(mx.uint8)               # L[i] = nearest_int(...)
    scale = 1.0 / iscale
    diff = xt - scale * Lu.astype(mx.float32)
    best = seq_sum((wt * diff) * diff, axis=0)
    for s in (-4, -3, -2, -1, 1, 2, 3, 4):
        iscale_is = _c(_F32(0.1) * _F32(s) + _F32(nmax)) / mx_safe
        scale_is = 1.0 / iscale_is
        li = mx.minimum(nearest_int_c(iscale_is * xt), nmax)
        diff = xt - scale_is * li.astype(mx.float32)
        mse = seq_sum((wt * diff) * diff, axis=0)
        better = mse < best
        best = mx.where(better, mse, best)
        iscale = mx.where(better, iscale_is, iscale)

    li = mx.minimum(nearest_int_c(iscale * xt), nmax)              # (k, n) int32
    lf = li.astype(mx.float32)
    sumlx = seq_sum((wt * xt) * lf, axis=0)
    suml2 = seq_sum((wt * lf) * lf, axis=0)
    lu = li.astype(mx.uint8)
    Lrows = [lu[i] for i in range(k)]                              # k rows (n,) uint8
    wx = [wt[i] * xt[i] for i in range(k)]
    for _ in range(5):
        changed = mx.zeros(sumlx.shape, dtype=mx.bool_)
        for i in range(k):
            w, xi, Li_u = wt[i], xt[i], Lrows[i]
            Li = Li_u.astype(mx.float32)
            slx = sumlx - wx[i] * Li
            sl2 = suml2 - (w * Li) * Li
            ok = mx.logical_and(slx > 0, sl2 > 0)
            new_l = mx.minimum(nearest_int_c((xi * sl2) / slx), nmax)
            ok = mx.logical_and(ok, new_l != Li_u.astype(mx.int32))
            nf = new_l.astype(mx.float32)
            slx = slx + wx[i] * nf
            sl2 = sl2 + (w * nf) * nf
            ok = mx.logical_and(ok, (slx * slx) * suml2 > (sumlx * sumlx) * sl2)
            Lrows[i] = mx.where(ok, new_l.astype(mx.uint8), Li_u)
            sumlx = mx.where(ok, slx, sumlx)
            suml2 = mx.where(ok, sl2, suml2)
            changed = mx.logical_or(changed, ok)
        if not mx.any(changed).item():
            break
    out = mx.where(suml2 > 0, sumlx / suml2, 0.0)

    out = mx.where(zero, 0.0, out)
    L = mx.stack(Lrows, axis=1)                                    # (n, k)
    L = mx.where(zero[:, None], mx.array(0, mx.uint8), L)
    return out, L
