"""Compiled IQ2_S: groups of 8 weights on a 1024-point grid, sub-blocks of 16.

The loops of ggml-quants.c (``quantize_row_iq2_s_impl``, ``iq2_find_best_neighbour``,
``dequantize_row_iq2_s``); the block layout and the algorithm in words are in
:mod:`mlxquant.quant.numpy.iq2s`. The search state (:func:`mlxquant.quant.grids_iq2.search_state`)
comes in as arrays bound on first use (:class:`~.grid_search.GridKernel`), grid points as float32
values ``2l + 1``; every sum keeps ggml's float32 order. Where ggml would abort the kernel raises
:class:`~mlxquant.quant.numpy.iq3.GridSearchAbort`; the dequantizer flips sign bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..grids_iq2 import IQ2S_GRID
from ..numpy.iq3 import GridSearchAbort
from .codec import JitCodec
from .grid_search import GridKernel, block_max, grid_fit, grid_rounding, iq2_tables, sigma2_of, split_signs
from .iq3 import MSG_NEIGHBOUR, MSG_SCALE
from .numeric import F32, KERNEL, bits_f32, f16_at, f32_bits, nearest_int, put_f16

QK_K = 256
EPS = F32(1e-8)  # GROUP_MAX_EPS_IQ2_S
GRID = IQ2S_GRID.astype(np.float32)  # (1024, 8) dequantization values

grid_rows = grid_rounding(8, 2, 2, 2)  # 2 groups of 8 weights, levels 0..2 packed 2 bits apart
fit = grid_fit(8, 16)                  # sumqx, sumq2 of a 16-weight sub-block


@njit(inline="always")
def search(weight, waux, xval, mx, kmap, nbrs, gridf, rows, on, rows_t, on_t, lv):
    """Trial scales and refit of one 16-weight sub-block: (scale, ok); grid rows in ``rows``."""
    best = F32(0)
    scale = mx / F32(5)
    for k in range(2):
        rows[k] = kmap[0]  # L = 0
        on[k] = True
    for t in range(-9, 10):
        inv = (F32(5) + F32(t) * F32(0.1)) / mx
        if not grid_rows(xval, waux, inv, F32(1) / inv, kmap, nbrs, gridf, rows_t, on_t, False, lv):
            return scale, False
        sumqx, sumq2 = fit(weight, xval, rows_t, gridf)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            for k in range(2):
                rows[k] = rows_t[k]
                on[k] = on_t[k]
    if (not on[0] or not on[1]) and scale > 0:
        if not grid_rows(xval, waux, F32(1) / scale, scale, kmap, nbrs, gridf, rows, on, True, lv):
            return scale, False
        sumqx, sumq2 = fit(weight, xval, rows, gridf)
        if sumq2 > 0:
            scale = sumqx / sumq2
    return scale, True


@njit(**KERNEL)
def quantize_iq2_s(x, w, out, kmap, nbrs, gridf):
    """quantize_row_iq2_s_impl over every row of ``x`` (``w`` empty: no imatrix)."""
    rows_n, cols = x.shape
    has_w = w.size > 0
    weight = np.empty(16, np.float32)
    waux = np.empty(16, np.float32)
    xval = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    signs = np.empty(2, np.int64)
    rows = np.empty(2, np.int64)
    rows_t = np.empty(2, np.int64)
    on = np.empty(2, np.bool_)
    on_t = np.empty(2, np.bool_)
    lv = np.empty(16, np.int32)
    for r in range(rows_n):
        for b in range(cols // QK_K):
            xs = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * 82 : (b + 1) * 82]
            for j in range(82):
                o[j] = 0
            sigma2 = sigma2_of(xs, True)
            max_scale = F32(0)
            for ib in range(16):
                xb = xs[16 * ib : 16 * ib + 16]
                if has_w:
                    for j in range(16):
                        weight[j] = w[b * QK_K + 16 * ib + j] * np.sqrt(sigma2 + xb[j] * xb[j])
                else:
                    for j in range(16):
                        weight[j] = F32(0.25) * sigma2 + xb[j] * xb[j]
                for j in range(16):
                    waux[j] = np.sqrt(weight[j])
                for k in range(2):
                    s, _ = split_signs(xb, xval, 8 * k)
                    signs[k] = s
                mx = block_max(xval, 16)
                scales[ib] = 0
                if mx < EPS:
                    continue
                scale, ok = search(weight, waux, xval, mx, kmap, nbrs, gridf, rows, on, rows_t, on_t, lv)
                if not ok:
                    raise GridSearchAbort(MSG_NEIGHBOUR)
                if scale < 0:
                    scale = -scale
                    for k in range(2):
                        signs[k] = (~signs[k]) & 255
                if not scale >= 0:
                    raise GridSearchAbort(MSG_SCALE)
                for k in range(2):
                    g8 = 2 * ib + k
                    o[2 + g8] = rows[k] & 255
                    o[66 + g8 // 4] |= (rows[k] >> 8) << (2 * (g8 % 4))
                    o[34 + g8] = signs[k]
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == 0:
                continue
            d = max_scale / F32(31)
            put_f16(o, 0, d * F32(0.9875))
            inv = F32(1) / d
            for ib in range(16):
                l = nearest_int(F32(0.5) * (inv * scales[ib] - F32(1)))
                l = max(0, min(15, l))
                o[74 + ib // 2] |= l << (4 * (ib % 2))
    return 0


@njit(**KERNEL)
def dequantize_iq2_s(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 82 : (b + 1) * 82]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 0)
            for ib32 in range(8):
                sc = np.int64(blk[74 + ib32])
                db0 = d * (F32(0.5) + F32(sc & 15)) * F32(0.25)
                db1 = d * (F32(0.5) + F32(sc >> 4)) * F32(0.25)
                qh = np.int64(blk[66 + ib32])
                for l in range(4):
                    dl = db0 if l < 2 else db1
                    g = np.int64(blk[2 + 4 * ib32 + l]) | (((qh >> (2 * l)) & 3) << 8)
                    sg = np.int64(blk[34 + 4 * ib32 + l])
                    for j in range(8):
                        v = dl * GRID[g, j]
                        y[32 * ib32 + 8 * l + j] = bits_f32(f32_bits(v) ^ (((sg >> j) & 1) << 31))


class IQ2_S(JitCodec, qtype="IQ2_S", backend="numba"):
    quantize_kernel = GridKernel(quantize_iq2_s, "IQ2_S", lambda: iq2_tables("IQ2_S"))
    dequantize_kernel = staticmethod(dequantize_iq2_s)
