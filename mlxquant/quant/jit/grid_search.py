"""Pieces shared by the compiled grid i-quants (IQ1_S/IQ1_M, IQ2_XXS/XS/S, IQ3_XXS/S).

ggml-quants.c searches a lattice grid the same way in ``iq2_find_best_neighbour`` and
``iq3_find_best_neighbour`` (8 or 4 weights per grid point), and rounds a sub-block onto the grid
and sums ``sumqx``/``sumq2`` over it in the same order in ``quantize_row_iq2_s_impl`` and
``quantize_row_iq3_{xxs,s}_impl``. Those loops are made here for a given group width, group
count and level range by small factories (:func:`neighbour_search`, :func:`grid_rounding`,
:func:`grid_fit`): the sizes are closure constants, so Numba compiles each copy with fixed trip
counts exactly as if it had been written out (same float32 order; speed measured unchanged).
Also shared, all inlined: the super-block's ``sigma2`` (:func:`sum_squares`, :func:`sigma2_of`),
a sub-block's maximum (:func:`block_max`), a group's sign bits (:func:`split_signs`) and the
even-parity rule of IQ2_XXS/IQ2_XS/IQ3_XXS (:func:`even_signs`).

:class:`GridKernel` is the codec-facing ``quantize_kernel`` of every grid type::

    quantize_kernel = GridKernel(quantize_iq2_s, "IQ2_S", lambda: iq2_tables("IQ2_S"))

It binds the type's search state (built on first call, not at import), turns a kernel's
non-zero return code or a :class:`~mlxquant.quant.numpy.iq3.GridSearchAbort` into an error that
names the type, and exposes the compiled dispatcher's ``signatures`` and ``_cache`` (the API asks
them whether machine code is ready).
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import numpy as np
from numba import njit

from ...errors import QuantInputError
from ..grids_iq2 import search_state
from ..numpy.iq3 import GridSearchAbort
from .numeric import F32, nearest_int

QK_K = 256
FLT_MAX = F32(np.finfo(np.float32).max)


@njit(inline="always")
def sum_squares(xs):
    """sum of ``xs[j]**2`` over a super-block, in order (float32)."""
    s = F32(0)
    for j in range(QK_K):
        s += xs[j] * xs[j]
    return s


@njit(inline="always")
def sigma2_of(xs, has_w):
    """``2 * sum(x**2) / 256`` of a super-block, the imatrix weights' offset; 0 without an imatrix."""
    if not has_w:
        return F32(0)
    return F32(2) * sum_squares(xs) / F32(QK_K)


@njit(inline="always")
def block_max(xval, n):
    """max of ``xval[:n]`` as C's ``if (xval[i] > max) max = xval[i]`` loop takes it."""
    mx = xval[0]
    for i in range(1, n):
        mx = mx if mx > xval[i] else xval[i]
    return mx


@njit(inline="always")
def split_signs(xb, xval, o):
    """|x| of the group of 8 at ``xb[o:o+8]`` into ``xval``; returns (sign bits, negatives)."""
    s = 0
    nflip = 0
    for i in range(8):
        v = xb[o + i]
        if v >= 0:
            xval[o + i] = v
        else:
            xval[o + i] = -v
            s |= 1 << i
            nflip += 1
    return s, nflip


@njit(inline="always")
def even_signs(xb, weight, xval, o, s):
    """ggml's rule for a group of 8 with an odd number of sign bits ``s``: the weight with the
    smallest ``weight * x**2`` (the first on ties) keeps its sign, its ``xval`` goes negative;
    returns the group's new sign bits."""
    imin = 0
    vmin = weight[o] * xb[o] * xb[o]
    for i in range(1, 8):
        a = weight[o + i] * xb[o + i] * xb[o + i]
        if a < vmin:
            vmin = a
            imin = i
    xval[o + imin] = -xval[o + imin]
    return s ^ (1 << imin)


def neighbour_search(width: int) -> Callable:
    """``best_neighbour(nbrs, start, gridf, xval, waux, o, scale)`` for groups of ``width``
    weights: the neighbour list at ``nbrs[start]`` (count, then grid rows) searched for the row
    closest to ``xval[o:o+width]`` in ``waux``-weighted distance at ``scale``; returns the grid
    row, or -1 when no distance is below FLT_MAX (ggml aborts there)."""

    @njit(inline="always")
    def best_neighbour(nbrs, start, gridf, xval, waux, o, scale):
        best_d2 = FLT_MAX
        best = -1
        for j in range(1, np.int64(nbrs[start]) + 1):
            g = np.int64(nbrs[start + j])
            d2 = F32(0)
            for i in range(width):
                diff = scale * gridf[g, i] - xval[o + i]
                d2 += waux[o + i] * diff * diff
            if d2 < best_d2:
                best_d2 = d2
                best = g
        return best

    return best_neighbour


def grid_rounding(width: int, groups: int, lmax: int, bits: int) -> Callable:
    """``grid_rows(xval, waux, inv, scale, kmap, nbrs, gridf, rows, on, only_off, lv) -> ok`` for
    ``groups`` groups of ``width`` weights: every weight's level ``clamp(nearest_int(0.5*(inv*x -
    1)), 0, lmax)`` first (one loop into the int32 scratch ``lv``: it vectorizes), then each group's
    code (levels packed ``bits`` apart) looked up in ``kmap``; an off-grid code goes to its best
    neighbour at ``scale``. Grid rows go to ``rows``, on-grid flags to ``on``; ``only_off`` leaves
    the groups with ``on[k]`` untouched (a refit). False where ggml aborts (no neighbour)."""
    n = width * groups
    best_neighbour = neighbour_search(width)

    @njit(inline="always")
    def grid_rows(xval, waux, inv, scale, kmap, nbrs, gridf, rows, on, only_off, lv):
        for j in range(n):
            l = nearest_int(F32(0.5) * (inv * xval[j] - F32(1)))
            lv[j] = max(0, min(lmax, l))
        for k in range(groups):
            if only_off and on[k]:
                continue
            u = 0
            for i in range(width):
                u |= lv[width * k + i] << (bits * i)
            g = np.int64(kmap[u])
            if not only_off:
                on[k] = g >= 0
            if g < 0:
                g = best_neighbour(nbrs, -g - 1, gridf, xval, waux, width * k, scale)
                if g < 0:
                    return False
            rows[k] = g
        return True

    return grid_rows


def grid_fit(width: int, n: int) -> Callable:
    """``fit(weight, xval, rows, gridf) -> (sumqx, sumq2)`` over ``n`` weights in groups of
    ``width`` (a power of two), the group ``k`` on grid row ``rows[k]``, in ggml's order."""
    shift = width.bit_length() - 1
    mask = width - 1

    @njit(inline="always")
    def fit(weight, xval, rows, gridf):
        sumqx = F32(0)
        sumq2 = F32(0)
        for j in range(n):
            q = gridf[rows[j >> shift], j & mask]
            w = weight[j]
            sumqx += w * xval[j] * q
            sumq2 += w * q * q
        return sumqx, sumq2

    return fit


@functools.cache
def iq2_tables(qtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kmap, neighbours, grid as float32) of an IQ2 type's search state, built once."""
    s = search_state(qtype)
    return s.kmap, s.neighbours, s.grid.astype(np.float32)


class GridKernel:
    """A grid codec's ``quantize_kernel``: ``(x, w, out)`` as the API calls it runs
    ``kernel(x, w, out, *tables())``.

    ``missing_imatrix``: the message (after ``"QTYPE: "``) raised when ``w`` is empty, or None
    when the type runs without one. ``why``: return code -> what ggml does there, for kernels
    that return a code instead of raising :class:`GridSearchAbort`.
    """

    def __init__(self, kernel, qtype: str, tables: Callable[[], tuple],
                 missing_imatrix: str | None = None, why: Mapping[int, str] | None = None):
        self.kernel = kernel
        self.qtype = qtype
        self.tables = tables
        self.missing_imatrix = missing_imatrix
        self.why = why or {}

    @property
    def signatures(self) -> list:
        return self.kernel.signatures

    @property
    def _cache(self):
        return self.kernel._cache

    def __call__(self, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
        if w.size == 0 and self.missing_imatrix is not None:
            raise QuantInputError(f"{self.qtype}: {self.missing_imatrix}")
        try:
            status = self.kernel(x, w, out, *self.tables())
        except GridSearchAbort as e:
            raise GridSearchAbort(f"{self.qtype}: {e}") from None
        if status:
            raise QuantInputError(
                f"{self.qtype}: values too large for this type: ggml's quantizer {self.why[status]}; "
                "scale the tensor down or pick another type"
            )
