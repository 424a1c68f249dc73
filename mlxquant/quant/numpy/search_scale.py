"""Scale searches for symmetric quantization, vectorized over groups: ggml's ``make_qx_quants``
and ``make_q3_quants`` (ggml-quants.c), bit-exact.

Each solver takes ``x`` of shape ``(n_groups, k)`` float32 and returns the group scales
``(n_groups,)`` float32 and the codes ``L`` ``(n_groups, k)`` uint8 stored as ggml stores them
(``nmax + l`` with ``l`` in ``[-nmax, nmax - 1]``; 0 for an all-zero group).

Exactness rules followed here (see FIELD-NOTES, "Bit-exact K-quants in NumPy"):

* Internally the arrays are position-major, ``(k, n_groups)``, so every sum over a group runs
  position by position in float32, exactly as the C loop ``s += ...`` does.
* Products keep C's evaluation order: ``w*x[i]*l`` is ``(w*x)*l`` and ``w*l*l`` is ``(w*l)*l``.
* ``nearest_int`` is ggml's magic-number rounding (:func:`nearest_int_c`), which equals
  round-half-even inside ``|v| < 2**22`` and stays defined (like the C code) outside it.
* ``max`` is the first element of largest magnitude (C's strict ``>`` scan).
"""

from __future__ import annotations

import numpy as np

from .numeric import F32, GROUP_MAX_EPS, blend, first_absmax, mask32, nearest_int_c, seq_sum


def _default_weights(xt: np.ndarray, rmse_type: int) -> np.ndarray | None:
    """ggml's weights when ``qw`` is NULL; None means all ones (rmse_type 2)."""
    if rmse_type == 1:
        return xt * xt
    if rmse_type == 2:
        return None
    if rmse_type == 3:
        return np.abs(xt)
    return np.sqrt(np.abs(xt))


# Groups per tile in the searches: a few (16, TILE) float32 buffers stay in the L2 cache.
TILE = 4096


class _Search:
    """Scratch buffers for one tile of a weighted search: rounding and weighted sums in place."""

    def __init__(self, xt: np.ndarray, w: np.ndarray | None, nmax: int):
        self.xt, self.w, self.nmax = xt, w, nmax
        self.wx = xt if w is None else w * xt  # (k, n): C's w*x[i], multiplied by l later
        self.tmp = np.empty_like(xt)

    def codes(self, iscale: np.ndarray, out: np.ndarray, lower: bool, upper: bool) -> np.ndarray:
        """out = MAX(-nmax, MIN(nmax-1, nearest_int(iscale*x))) as float32 (|iscale*x| < 2**22).

        A clamp is skipped only where the bound cannot be reached (see :func:`qx_quants_t`).
        """
        np.multiply(self.xt, iscale, out=out)
        np.rint(out, out=out)
        if upper:
            np.minimum(out, F32(self.nmax - 1), out=out)
        if lower:
            np.maximum(out, F32(-self.nmax), out=out)
        return out

    def sums(self, l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sumlx = Σ (w*x)*l and suml2 = Σ (w*l)*l over positions, sequential float32."""
        t = self.tmp
        np.multiply(self.wx, l, out=t)
        sumlx = seq_sum(t, axis=0)
        if self.w is None:
            np.multiply(l, l, out=t)
        else:
            np.multiply(self.w, l, out=t)
            t *= l
        return sumlx, seq_sum(t, axis=0)


def qx_quants_t(
    xt: np.ndarray, nmax: int, rmse_type: int, wt: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Position-major ``make_qx_quants``: xt (k, n) float32 -> (scale (n,), l (k, n) float32).

    ``l`` holds the signed codes in ``[-nmax, nmax-1]``, NaN for all-zero groups (stored as 0,
    see :func:`store_codes`). ``wt`` is (k, n) or broadcastable to it, or None for ggml's
    default weights. Works tile by tile (``TILE`` groups) to stay in cache.
    """
    xt = np.asarray(xt, dtype=F32)
    k, n = xt.shape
    if wt is not None:
        wt = np.broadcast_to(np.asarray(wt, dtype=F32), xt.shape)
    if n <= TILE:
        return _qx_tile(np.ascontiguousarray(xt), nmax, rmse_type, wt)
    scale = np.empty(n, dtype=F32)
    l = np.empty((k, n), dtype=F32)
    for s in range(0, n, TILE):
        e = min(n, s + TILE)
        w = None if wt is None else np.ascontiguousarray(wt[:, s:e])
        scale[s:e], l[:, s:e] = _qx_tile(np.ascontiguousarray(xt[:, s:e]), nmax, rmse_type, w)
    return scale, l


def _qx_tile(
    xt: np.ndarray, nmax: int, rmse_type: int, w: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    amax, mx = first_absmax(xt)
    zero = amax < GROUP_MAX_EPS  # (n,) bool
    l = np.empty_like(xt)  # (k, n) f32 signed codes
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(-nmax) / mx  # (n,) f32
        if rmse_type == 0:
            w = None  # plain rounding: no weights are read
        elif w is None:
            w = _default_weights(xt, abs(rmse_type))
        srch = _Search(xt, w, nmax)
        # x = -max reaches +nmax (clamped to nmax-1); -nmax is the lowest value reached
        srch.codes(iscale, l, lower=False, upper=True)
        if rmse_type == 0:
            return _finish(F32(1.0) / iscale, l, zero)
        sumlx, suml2 = srch.sums(l)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0.0)).astype(F32)
        if rmse_type < 0:  # return_early
            inv = F32(1.0) / iscale
            scale = np.where(suml2 > 0, F32(0.5) * (scale + inv), inv).astype(F32)
            return _finish(scale, l, zero)
        # state[0] = scale, state[1] = best = scale*sumlx, state[2] = the winning iscale. The
        # codes are not kept: rounding the winning iscale*x again at the end gives them back.
        state = np.stack([scale, scale * sumlx, iscale])  # (3, n) f32
        cand = np.empty_like(state)
        lt = np.empty_like(xt)
        for step in range(-9, 10):
            if step == 0:
                continue
            iscale = -(F32(nmax) + F32(0.1) * F32(step)) / mx
            # |iscale*x| <= nmax + step/10: the upper clamp can bind when that is >= nmax - 0.5
            # (step >= -5), the lower one when it is >= nmax + 0.5 (step >= 5)
            srch.codes(iscale, lt, lower=step >= 5, upper=step >= -5)
            slx, sl2 = srch.sums(lt)
            better = (sl2 > 0) & (slx * slx > state[1] * sl2)
            np.divide(slx, sl2, out=cand[0])
            np.multiply(cand[0], slx, out=cand[1])
            cand[2] = iscale
            blend(state, cand, mask32(better))
        scale, best_iscale = state[0].copy(), state[2]
        srch.codes(best_iscale, l, lower=True, upper=True)
    return _finish(scale, l, zero)


def _finish(scale: np.ndarray, l: np.ndarray, zero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All-zero groups get scale 0 and the NaN code marker (stored as 0 by :func:`store_codes`)."""
    scale = np.asarray(scale, dtype=F32)
    if zero.any():
        scale = np.where(zero, F32(0.0), scale).astype(F32)
        l[:, zero] = np.nan  # marker: stored code 0, see store_codes
    return scale, l


def store_codes(l: np.ndarray, nmax: int) -> np.ndarray:
    """Signed float codes (NaN = all-zero group) -> ggml's stored uint8 ``nmax + l`` (or 0)."""
    out = np.where(np.isnan(l), F32(-nmax), l) + F32(nmax)
    return out.astype(np.uint8)


def make_qx_quants(
    x: np.ndarray, nmax: int, rmse_type: int, qw: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ggml ``make_qx_quants`` over groups.

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
    xt = np.ascontiguousarray(np.asarray(x, dtype=F32).T)  # (k, n)
    wt = None
    if qw is not None:
        qw = np.asarray(qw, dtype=F32)
        wt = qw[:, None] if qw.ndim == 1 else np.ascontiguousarray(qw.T)
    scale, l = qx_quants_t(xt, nmax, rmse_type, wt)
    return scale, np.ascontiguousarray(store_codes(l, nmax).T)


def q3_quants_t(xt: np.ndarray, nmax: int, do_rmse: bool) -> tuple[np.ndarray, np.ndarray]:
    """Position-major ``make_q3_quants``: xt (k, n) -> (scale (n,), l (k, n) float32, NaN = zero)."""
    xt = np.asarray(xt, dtype=F32)
    k, n = xt.shape
    amax, mx = first_absmax(xt)
    zero = amax < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(-nmax) / mx
        w = xt * xt
        srch = _Search(xt, w, nmax)
        l = srch.codes(iscale, np.empty_like(xt), lower=False, upper=True)  # (k, n) f32
        if not do_rmse:
            return _finish(F32(1.0) / iscale, l, zero)
        wx = srch.wx
        sumlx, suml2 = srch.sums(l)
        # Coordinate descent, position by position (C: up to 5 sweeps, ``if (!n_changed) break``).
        # The first sweep runs in place on all groups (all-zero ones have NaN sums, so they never
        # pass ``slx > 0``); later sweeps work on copies of the few groups that still changed.
        sel = None
        for _ in range(5):
            if sel is None:
                xs, ws, wxs, ls, sx, s2 = xt, w, wx, l, sumlx, suml2
            else:
                # np.take keeps rows contiguous (xt[:, sel] would come back Fortran-ordered)
                xs, ws, wxs, ls = (np.take(a, sel, axis=1) for a in (xt, w, wx, l))  # (k, m)
                sx, s2 = sumlx[sel], suml2[sel]
            changed = _q3_sweep(xs, ws, wxs, ls, sx, s2, nmax)  # updates ls, sx, s2 in place
            if sel is None:
                sel = np.flatnonzero(changed)
            else:
                l[:, sel], sumlx[sel], suml2[sel] = ls, sx, s2
                sel = sel[changed]
            if sel.size == 0:
                break
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0.0)).astype(F32)
    return _finish(scale, l, zero)


def _q3_sweep(
    xs: np.ndarray, ws: np.ndarray, wxs: np.ndarray, ls: np.ndarray,
    sx: np.ndarray, s2: np.ndarray, nmax: int,
) -> np.ndarray:
    """One sweep of make_q3_quants' coordinate descent over (k, m) groups, in place on the codes
    ``ls`` and the sums ``sx`` (Σ w x l), ``s2`` (Σ w l²); returns which groups changed (m,)."""
    lo, hi = F32(-nmax), F32(nmax - 1)
    changed = np.zeros(xs.shape[1], dtype=bool)
    for i in range(xs.shape[0]):
        li = ls[i]
        slx = sx - wxs[i] * li
        ok = slx > 0
        sl2 = s2 - (ws[i] * li) * li
        new_l = nearest_int_c((xs[i] * sl2) / slx).astype(F32)
        np.clip(new_l, lo, hi, out=new_l)
        ok &= new_l != li
        slx += wxs[i] * new_l
        sl2 += (ws[i] * new_l) * new_l
        ok &= (sl2 > 0) & ((slx * slx) * s2 > (sx * sx) * sl2)
        mi = mask32(ok)
        blend(li, new_l, mi)
        blend(sx, slx, mi)
        blend(s2, sl2, mi)
        changed |= ok
    return changed


def make_q3_quants(x: np.ndarray, nmax: int, do_rmse: bool) -> tuple[np.ndarray, np.ndarray]:
    """ggml ``make_q3_quants`` over groups: x (n_groups, k) float32 -> (scale (n,), L (n, k) uint8).

    With ``do_rmse`` the codes start at rounding ``-nmax/max`` and are improved by up to five
    coordinate-descent sweeps on the x²-weighted error; the scale is the least-squares one.
    Without, the scale is ``1/iscale``. L = ``nmax + l`` (0 for all-zero groups).
    """
    xt = np.ascontiguousarray(np.asarray(x, dtype=F32).T)
    scale, l = q3_quants_t(xt, nmax, do_rmse)
    return scale, np.ascontiguousarray(store_codes(l, nmax).T)
