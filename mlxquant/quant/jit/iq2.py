"""Compiled 2-bit grid types: IQ2_XXS and IQ2_XS (256 weights per block, imatrix required).

The loops of ggml-quants.c (``quantize_row_iq2_xxs_impl``, ``quantize_row_iq2_xs_impl``,
``iq2_find_best_neighbour``, ``make_qp_quants``; ``dequantize_row_iq2_xxs`` /
``dequantize_row_iq2_xs``); block layouts and the exactness argument are in
:mod:`mlxquant.quant.numpy.iq2`, the grids and search state in :mod:`..grids_iq2`.

The kernels are ggml's scalar loops in the same float32 order: a scale trial's work is
dominated by the neighbour search, which has data-dependent trip counts, so there is nothing
to gain from running trials side by side. The search state (``kmap``, ``neighbours``, the grid
as float32) is passed as arguments rather than frozen into the machine code as constants.
A kernel returns 0, or the code of the assertion ggml aborts on (no neighbour at a finite
distance, a point off the grid, a NaN scale); the codec turns that into a QuantInputError.

Speed, one thread (``MLXQUANT_THREADS=1``), 256x4096 float32 normal with a lognormal imatrix,
best of 3 against ``ggml_quantize_chunk`` / ``to_float`` in the same process, 2-core x86 at
load 3-6 (three runs): quantize 1.3-1.7x ggml's speed (both types), dequantize 1.1-1.5x.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..grids_iq2 import IQ2XS_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS
from .codec import JitCodec
from .grid_search import (GridKernel, block_max, even_signs, iq2_tables, neighbour_search, split_signs,
                          sum_squares)
from .numeric import F32, GROUP_MAX_EPS, KERNEL, f16_at, nearest_int, put_f16
from .search_scale_min import make_qp_quants

QK_K = 256
NO_NEIGHBOUR, OFF_GRID, NAN_SCALE = 1, 2, 3
_WHY = {
    NO_NEIGHBOUR: "aborts here (no neighbour at a finite distance)",
    OFF_GRID: "aborts here (a point off the grid)",
    NAN_SCALE: "aborts here (a NaN sub-block scale)",
}
NO_IMATRIX = "this type needs an importance matrix (imatrix)"

GRID_XXS = IQ2XXS_GRID.astype(np.float32)
GRID_XS = IQ2XS_GRID.astype(np.float32)
KSIGNS = KSIGNS_IQ2XS.copy()

nearest_row = neighbour_search(8)  # iq2_find_best_neighbour's distance loop


@njit(inline="always")
def round_group(xv, o, idv, L):
    """Levels ``clamp(nearest_int(0.5f*(id*x - 1)), 0, 2)`` of one group; returns its code u."""
    u = 0
    for i in range(8):
        l = nearest_int(F32(0.5) * (idv * xv[o + i] - F32(1)))
        l = max(0, min(2, l))
        L[o + i] = l
        u |= l << (2 * i)
    return u


@njit(inline="always")
def snap(kmap, nbrs, gridf, xv, wa, o, idv, scale, L):
    """Round the group at ``xv[o:o+8]`` with ``idv``, levels into ``L[o:o+8]``; an off-grid code
    takes its best neighbour at ``scale`` (iq2_find_best_neighbour) and that point's levels.
    Returns 1 on the grid, 0 moved to a neighbour, -1 when none is below FLT_MAX (ggml aborts)."""
    u = round_group(xv, o, idv, L)
    if kmap[u] >= 0:
        return 1
    gi = nearest_row(nbrs, -kmap[u] - 1, gridf, xv, wa, o, scale)
    if gi < 0:
        return -1
    for i in range(8):
        L[o + i] = (np.int64(gridf[gi, i]) - 1) // 2
    return 0


@njit(inline="always")
def group_code(L, o):
    u = 0
    for i in range(8):
        u |= np.int64(L[o + i]) << (2 * i)
    return u & 0xFFFF


@njit(inline="always")
def weights_and_signs(xb, qw, sigma2, n, weight, waux, xval, signs):
    """weight = qw*sqrt(sigma2 + x^2), waux = sqrt(weight), |x| with an even number of flips."""
    for i in range(n):
        weight[i] = qw[i] * np.sqrt(sigma2 + xb[i] * xb[i])
        waux[i] = np.sqrt(weight[i])
    for k in range(n // 8):
        s, nflip = split_signs(xb, xval, 8 * k)
        if nflip % 2:
            s = even_signs(xb, weight, xval, 8 * k, s)
        signs[k] = s & 127


@njit(inline="always")
def sums(weight, xval, L, n):
    sumqx = F32(0)
    sumq2 = F32(0)
    for i in range(n):
        q = F32(2 * np.int64(L[i]) + 1)
        sumqx += weight[i] * xval[i] * q
        sumq2 += weight[i] * q * q
    return sumqx, sumq2


@njit(**KERNEL)
def quantize_iq2_xxs(x, w, out, kmap, nbrs, gridf):
    rows, cols = x.shape
    weight = np.empty(32, np.float32)
    waux = np.empty(32, np.float32)
    xval = np.empty(32, np.float32)
    L = np.zeros(32, np.uint8)
    Laux = np.zeros(32, np.int64)
    signs = np.zeros(4, np.int64)
    scales = np.zeros(8, np.float32)
    q2 = np.zeros(16, np.int64)
    for r in range(rows):
        for b in range(cols // QK_K):
            xs = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * 66 : (b + 1) * 66]
            q2[:] = 0
            max_scale = F32(0)
            sigma2 = sum_squares(xs) / F32(QK_K)
            for ib in range(8):
                xb = xs[32 * ib : 32 * ib + 32]
                qw = w[b * QK_K + 32 * ib : b * QK_K + 32 * ib + 32]
                weights_and_signs(xb, qw, sigma2, 32, weight, waux, xval, signs)
                scales[ib] = F32(0)
                if block_max(xval, 32) < GROUP_MAX_EPS:
                    continue
                scale = make_qp_quants(32, 4, xval, L, weight)
                eff_max = scale * F32(3)
                if eff_max <= 0:
                    continue
                best = F32(0)
                for is_ in range(-6, 7):
                    idv = (F32(5) + F32(is_) * F32(0.1)) / eff_max
                    this_scale = F32(1) / idv
                    for k in range(4):
                        if snap(kmap, nbrs, gridf, xval, waux, 8 * k, idv, this_scale, Laux) < 0:
                            return NO_NEIGHBOUR
                    sumqx, sumq2 = sums(weight, xval, Laux, 32)
                    if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                        scale = sumqx / sumq2
                        best = scale * sumqx
                        for i in range(32):
                            L[i] = Laux[i]
                if scale > 0:
                    idv = F32(1) / scale
                    for k in range(4):
                        if snap(kmap, nbrs, gridf, xval, waux, 8 * k, idv, scale, Laux) < 0:
                            return NO_NEIGHBOUR
                    for i in range(32):
                        L[i] = Laux[i]
                    sumqx, sumq2 = sums(weight, xval, L, 32)
                    if sumq2 > 0:
                        scale = sumqx / sumq2
                if scale < 0:
                    scale = -scale
                    for k in range(4):
                        signs[k] = ~signs[k] & 127
                for k in range(4):
                    u = group_code(L, 8 * k)
                    gi = kmap[u] if u < kmap.size else -1
                    if gi < 0:
                        return OFF_GRID
                    q2[2 * ib] |= np.int64(gi) << (8 * k)
                    q2[2 * ib + 1] |= signs[k] << (7 * k)
                if not scale >= 0:
                    return NAN_SCALE
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == 0:
                for i in range(66):
                    o[i] = 0
                continue
            d = max_scale / F32(31)
            put_f16(o, 0, d)
            idv = F32(1) / d
            for ib in range(8):
                l = nearest_int(F32(0.5) * (idv * scales[ib] - F32(1)))
                q2[2 * ib + 1] |= max(0, min(15, l)) << 28
            for j in range(16):
                for t in range(4):
                    o[2 + 4 * j + t] = (q2[j] >> (8 * t)) & 0xFF
    return 0


@njit(**KERNEL)
def quantize_iq2_xs(x, w, out, kmap, nbrs, gridf):
    rows, cols = x.shape
    weight = np.empty(16, np.float32)
    waux = np.empty(16, np.float32)
    xval = np.empty(16, np.float32)
    L = np.zeros(16, np.int64)
    Laux = np.zeros(16, np.int64)
    on = np.zeros(2, np.bool_)
    on_aux = np.zeros(2, np.bool_)
    signs = np.zeros(2, np.int64)
    scales = np.zeros(16, np.float32)
    q2 = np.zeros(32, np.int64)
    for r in range(rows):
        for b in range(cols // QK_K):
            xs = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * 74 : (b + 1) * 74]
            q2[:] = 0
            max_scale = F32(0)
            sigma2 = sum_squares(xs) / F32(QK_K)
            for ib in range(16):
                xb = xs[16 * ib : 16 * ib + 16]
                qw = w[b * QK_K + 16 * ib : b * QK_K + 16 * ib + 16]
                weights_and_signs(xb, qw, sigma2, 16, weight, waux, xval, signs)
                L[:] = 0
                scales[ib] = F32(0)
                mx = block_max(xval, 16)
                if mx < GROUP_MAX_EPS:
                    continue
                best = F32(0)
                scale = mx / F32(5)
                on[0] = True
                on[1] = True
                for is_ in range(-9, 10):
                    idv = (F32(5) + F32(is_) * F32(0.1)) / mx
                    this_scale = F32(1) / idv
                    for k in range(2):
                        st = snap(kmap, nbrs, gridf, xval, waux, 8 * k, idv, this_scale, Laux)
                        if st < 0:
                            return NO_NEIGHBOUR
                        on_aux[k] = st > 0
                    sumqx, sumq2 = sums(weight, xval, Laux, 16)
                    if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                        scale = sumqx / sumq2
                        best = scale * sumqx
                        for i in range(16):
                            L[i] = Laux[i]
                        on[0] = on_aux[0]
                        on[1] = on_aux[1]
                if not (on[0] and on[1]) and scale > 0:
                    idv = F32(1) / scale
                    for k in range(2):
                        if on[k]:
                            continue
                        if snap(kmap, nbrs, gridf, xval, waux, 8 * k, idv, scale, L) < 0:
                            return NO_NEIGHBOUR
                    sumqx, sumq2 = sums(weight, xval, L, 16)
                    if sumq2 > 0:
                        scale = sumqx / sumq2
                if scale < 0:
                    scale = -scale
                    for k in range(2):
                        signs[k] = ~signs[k] & 127
                for k in range(2):
                    u = group_code(L, 8 * k)
                    gi = kmap[u] if u < kmap.size else -1
                    if gi < 0:
                        return OFF_GRID
                    q2[2 * ib + k] = np.int64(gi) | (signs[k] << 9)
                if not scale >= 0:
                    return NAN_SCALE
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            for j in range(8):
                o[66 + j] = 0
            if max_scale == 0:
                for i in range(66):
                    o[i] = 0
                continue
            d = max_scale / F32(31)
            put_f16(o, 0, d)
            idv = F32(1) / d
            for ib in range(16):
                l = max(0, min(15, nearest_int(F32(0.5) * (idv * scales[ib] - F32(1)))))
                o[66 + ib // 2] |= l << (4 * (ib % 2))
            for j in range(32):
                o[2 + 2 * j] = q2[j] & 0xFF
                o[3 + 2 * j] = (q2[j] >> 8) & 0xFF
    return 0


@njit(inline="always")
def put_group(y, o, db, grid, gi, s):
    for j in range(8):
        y[o + j] = db * grid[gi, j] * (F32(-1) if (s >> j) & 1 else F32(1))


@njit(**KERNEL)
def dequantize_iq2_xxs(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 66 : (b + 1) * 66]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 0)
            for ib in range(8):
                p = 2 + 8 * ib
                a1 = (np.int64(blk[p + 4]) | (np.int64(blk[p + 5]) << 8)
                      | (np.int64(blk[p + 6]) << 16) | (np.int64(blk[p + 7]) << 24))
                db = d * (F32(0.5) + F32(a1 >> 28)) * F32(0.25)
                for k in range(4):
                    put_group(y, 32 * ib + 8 * k, db, GRID_XXS, blk[p + k], KSIGNS[(a1 >> (7 * k)) & 127])


@njit(**KERNEL)
def dequantize_iq2_xs(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 74 : (b + 1) * 74]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 0)
            for ib in range(8):
                sc = np.int64(blk[66 + ib])
                db0 = d * (F32(0.5) + F32(sc & 0xF)) * F32(0.25)
                db1 = d * (F32(0.5) + F32(sc >> 4)) * F32(0.25)
                for k in range(4):
                    p = 2 + 8 * ib + 2 * k
                    q = np.int64(blk[p]) | (np.int64(blk[p + 1]) << 8)
                    put_group(y, 32 * ib + 8 * k, db0 if k < 2 else db1, GRID_XS, q & 511, KSIGNS[q >> 9])


class IQ2_XXS(JitCodec, qtype="IQ2_XXS", backend="numba"):
    quantize_kernel = GridKernel(quantize_iq2_xxs, "IQ2_XXS", lambda: iq2_tables("IQ2_XXS"), NO_IMATRIX, _WHY)
    dequantize_kernel = staticmethod(dequantize_iq2_xxs)


class IQ2_XS(JitCodec, qtype="IQ2_XS", backend="numba"):
    quantize_kernel = GridKernel(quantize_iq2_xs, "IQ2_XS", lambda: iq2_tables("IQ2_XS"), NO_IMATRIX, _WHY)
    dequantize_kernel = staticmethod(dequantize_iq2_xs)
