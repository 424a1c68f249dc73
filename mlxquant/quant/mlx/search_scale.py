"""Scale searches for symmetric quantization on MLX arrays: ggml's ``make_qx_quants`` and
``make_q3_quants`` (twin of ``mlxquant/quant/numpy/search_scale.py``, same names, same bytes).

Each solver takes ``x`` of shape ``(n_groups, k)`` float32 and returns the group scales
``(n_groups,)`` float32 and the codes ``L`` ``(n_groups, k)`` uint8 stored as ggml stores them
(``nmax + l`` with ``l`` in ``[-nmax, nmax - 1]``; 0 for an all-zero group), all ``mx.array``.

Exactness rules (FIELD-NOTES, "Bit-exact K-quants in NumPy"), as in the NumPy reference:

* Internally the arrays are position-major, ``(k, n_groups)``; every sum over a group adds the
  position rows one after the other (``acc = acc + a[i]``) because MLX reductions have no
  specified order.
* Products keep C's evaluation order: ``w*x[i]*l`` is ``(w*x)*l`` and ``w*l*l`` is ``(w*l)*l``.
* ``nearest_int`` is ``mx.round`` (half to even) where ``|v| < 2**22`` is guaranteed, else ggml's
  magic-number bit trick (:func:`nearest_int_c`).
* ``max`` is the first element of largest magnitude (C's strict ``>`` scan), found with
  order-independent ``max``/``min`` reductions, never with ``argmax`` tie rules.
* Nothing here is ``mx.compile``d: every multiply and add is its own op, so no backend can
  contract ``a*b + c`` into an FMA (which would change the rounding decisions; ggml's reference
  bytes are the non-FMA x86-64 ones). On Metal, MLX's kernels must also keep IEEE division and
  sqrt; that is the remaining platform risk, unmeasurable on the Linux machines.
"""

from __future__ import annotations

import mlx.core as mx

from .numeric import F32, GROUP_MAX_EPS, first_absmax, nearest_int_c, seq_sum


def _f32(a) -> mx.array:
    """Any array (mx or NumPy) -> float32 mx.array."""
    return a.astype(F32) if isinstance(a, mx.array) else mx.array(a, dtype=F32)


def _default_weights(xt: mx.array, rmse_type: int) -> mx.array | None:
    """ggml's weights when ``qw`` is NULL; None means all ones (rmse_type 2)."""
    if rmse_type == 1:
        return xt * xt
    if rmse_type == 2:
        return None
    if rmse_type == 3:
        return mx.abs(xt)
    return mx.sqrt(mx.abs(xt))


class _Search:
    """One weighted search over (k, n) position-major groups."""

    def __init__(self, xt: mx.array, w: mx.array | None, nmax: int):
        self.xt, self.w, self.nmax = xt, w, nmax
        self.wx = xt if w is None else w * xt  # (k, n): C's w*x[i], multiplied by l later

    def codes(self, iscale: mx.array, lower: bool, upper: bool) -> mx.array:
        """MAX(-nmax, MIN(nmax-1, nearest_int(iscale*x))) as float32 (|iscale*x| < 2**22)."""
        out = mx.round(self.xt * iscale)
        if upper:
            out = mx.minimum(out, float(self.nmax - 1))
        if lower:
            out = mx.maximum(out, float(-self.nmax))
        return out

    def sums(self, l: mx.array) -> tuple[mx.array, mx.array]:
        """sumlx = Σ (w*x)*l and suml2 = Σ (w*l)*l over positions, sequential float32."""
        sumlx = seq_sum(self.wx * l, axis=0)
        sl = l * l if self.w is None else (self.w * l) * l
        return sumlx, seq_sum(sl, axis=0)


def qx_quants_t(
    xt: mx.array, nmax: int, rmse_type: int, wt: mx.array | None
) -> tuple[mx.array, mx.array]:
    """Position-major ``make_qx_quants``: xt (k, n) float32 -> (scale (n,), l (k, n) float32).

    ``l`` holds the signed codes in ``[-nmax, nmax-1]``, NaN for all-zero groups (stored as 0,
    see :func:`store_codes`). ``wt`` is (k, n) or broadcastable to it, or None for ggml's
    default weights.
    """
    xt = xt.astype(F32)
    amax, mxv = first_absmax(xt, axis=0)
    zero = amax < GROUP_MAX_EPS  # (n,) bool
    iscale = (-float(nmax)) / mxv  # (n,) f32; inf for all-zero groups (masked at the end)
    if rmse_type == 0:
        w = None
    elif wt is None:
        w = _default_weights(xt, abs(rmse_type))
    else:
        w = mx.broadcast_to(wt.astype(F32), xt.shape)
    srch = _Search(xt, w, nmax)
    # x = -max reaches +nmax (clamped to nmax-1); -nmax is the lowest value reached
    l = srch.codes(iscale, lower=False, upper=True)
    if rmse_type == 0:
        return _finish(1.0 / iscale, l, zero)
    sumlx, suml2 = srch.sums(l)
    scale = mx.where(suml2 != 0, sumlx / suml2, 0.0)
    if rmse_type < 0:  # return_early
        inv = 1.0 / iscale
        return _finish(mx.where(suml2 > 0, 0.5 * (scale + inv), inv), l, zero)
    best = scale * sumlx
    best_iscale = iscale
    for step in range(-9, 10):
        if step == 0:
            continue
        # -(nmax + 0.1f*is) / max, all in float32 as in C
        num = mx.array(nmax, dtype=F32) + mx.array(0.1, dtype=F32) * mx.array(step, dtype=F32)
        isc = -num / mxv
        # |iscale*x| <= nmax + step/10: the upper clamp can bind when that is >= nmax - 0.5
        # (step >= -5), the lower one when it is >= nmax + 0.5 (step >= 5)
        lt = srch.codes(isc, lower=step >= 5, upper=step >= -5)
        slx, sl2 = srch.sums(lt)
        better = (sl2 > 0) & (slx * slx > best * sl2)
        cand = slx / sl2
        scale = mx.where(better, cand, scale)
        best = mx.where(better, cand * slx, best)
        best_iscale = mx.where(better, isc, best_iscale)
    # The codes of the winning scale are the rounding of best_iscale*x again.
    l = srch.codes(best_iscale, lower=True, upper=True)
    return _finish(scale, l, zero)


def _finish(scale: mx.array, l: mx.array, zero: mx.array) -> tuple[mx.array, mx.array]:
    """All-zero groups get scale 0 and the NaN code marker (stored as 0 by :func:`store_codes`)."""
    scale = mx.where(zero, 0.0, scale.astype(F32))
    l = mx.where(zero[None], mx.array(float("nan"), dtype=F32), l)
    return scale, l


def store_codes(l: mx.array, nmax: int) -> mx.array:
    """Signed float codes (NaN = all-zero group) -> ggml's stored uint8 ``nmax + l`` (or 0)."""
    return (mx.where(mx.isnan(l), float(-nmax), l) + float(nmax)).astype(mx.uint8)


def make_qx_quants(
    x: mx.array, nmax: int, rmse_type: int, qw: mx.array | None = None
) -> tuple[mx.array, mx.array]:
    """ggml ``make_qx_quants`` over groups (MLX arrays in and out).

    Args:
        x: (n_groups, k) float32.
        nmax: codes are ``l`` in ``[-nmax, nmax-1]``.
        rmse_type: 0 = plain rounding at ``-nmax/max``; 1..4 = weighted search over 18 extra
            scales with default weights x², 1, |x|, sqrt|x|; negative = one weighted least-squares
            step, returning the mean of it and ``1/iscale`` (ggml's ``return_early``).
        qw: optional weights, (n_groups, k) or (k,), replacing the default ones.

    Returns:
        scale (n_groups,) float32 and L (n_groups, k) uint8 = ``nmax + l`` (0 for groups with
        ``max|x| < 1e-15``, whose scale is 0).
    """
    xt = mx.contiguous(_f32(x).T)  # (k, n)
    wt = None
    if qw is not None:
        qw = _f32(qw)
        wt = qw[:, None] if qw.ndim == 1 else mx.contiguous(qw.T)
    scale, l = qx_quants_t(xt, nmax, rmse_type, wt)
    return scale, mx.contiguous(store_codes(l, nmax).T)


def q3_quants_t(xt: mx.array, nmax: int, do_rmse: bool) -> tuple[mx.array, mx.array]:
    """Position-major ``make_q3_quants``: xt (k, n) -> (scale (n,), l (k, n) float32, NaN = zero)."""
    xt = xt.astype(F32)
    k = xt.shape[0]
    amax, mxv = first_absmax(xt, axis=0)
    zero = amax < GROUP_MAX_EPS
    iscale = (-float(nmax)) / mxv
    w = xt * xt
    srch = _Search(xt, w, nmax)
    l = srch.codes(iscale, lower=False, upper=True)  # (k, n) f32
    if not do_rmse:
        return _finish(1.0 / iscale, l, zero)
    wx = srch.wx
    sumlx, suml2 = srch.sums(l)
    # Coordinate descent, position by position. C runs up to 5 sweeps and stops after a sweep
    # that changed nothing; such a sweep leaves the state as it was, so every later sweep would
    # change nothing either: running all 5 sweeps on every group gives the same result.
    # All-zero groups have NaN sums, so they never pass ``slx > 0``.
    rows = [l[i] for i in range(k)]
    for _ in range(5):
        for i in range(k):
            li = rows[i]
            slx = sumlx - wx[i] * li
            ok = slx > 0
            sl2 = suml2 - (w[i] * li) * li
            new_l = mx.clip(nearest_int_c((xt[i] * sl2) / slx), -nmax, nmax - 1).astype(F32)
            ok = ok & (new_l != li)
            slx = slx + wx[i] * new_l
            sl2 = sl2 + (w[i] * new_l) * new_l
            ok = ok & (sl2 > 0) & ((slx * slx) * suml2 > (sumlx * sumlx) * sl2)
            rows[i] = mx.where(ok, new_l, li)
            sumlx = mx.where(ok, slx, sumlx)
            suml2 = mx.where(ok, sl2, suml2)
    l = mx.stack(rows)
    scale = mx.where(suml2 > 0, sumlx / suml2, 0.0)
    return _finish(scale, l, zero)


def make_q3_quants(x: mx.array, nmax: int, do_rmse: bool) -> tuple[mx.array, mx.array]:
    """ggml ``make_q3_quants`` over groups: x (n_groups, k) float32 -> (scale (n,), L (n, k) uint8).

    With ``do_rmse`` the codes start at rounding ``-nmax/max`` and are improved by up to five
    coordinate-descent sweeps on the x²-weighted error; the scale is the least-squares one.
    Without, the scale is ``1/iscale``. L = ``nmax + l`` (0 for all-zero groups).
    """
    xt = mx.contiguous(_f32(x).T)
    scale, l = q3_quants_t(xt, nmax, do_rmse)
    return scale, mx.contiguous(store_codes(l, nmax).T)
