"""Compiled 3-bit grid i-quants: IQ3_XXS (256-point grid) and IQ3_S (512-point grid).

The loops of ggml-quants.c (``quantize_row_iq3_xxs_impl``, ``quantize_row_iq3_s_impl``,
``iq3_find_best_neighbour``, ``dequantize_row_iq3_xxs`` / ``dequantize_row_iq3_s``); block layouts,
the algorithm in words and ggml's quirks are in :mod:`mlxquant.quant.numpy.iq3`.

One kernel serves both types (``xxs`` selects the grid, the number of trial scales, the sign
parity rule and the layout). The search state (:func:`~mlxquant.quant.grids_iq3.search_state`)
is passed in as arrays, so importing this module builds nothing; the codec's kernel object
(:class:`~.grid_search.GridKernel`) binds the tables on its first call. Grid points are read as float32
(``2l + 1``) so that the inner loops do no integer-to-float conversions; every sum keeps ggml's
float32 order. Where ggml would abort (``GGML_ASSERT`` in the neighbour search, or a NaN
sub-block scale) the kernel raises :class:`~mlxquant.quant.numpy.iq3.GridSearchAbort`.

Speed (vs ggml, one thread): the levels of all 32 weights of a trial are rounded in one loop
before the groups look up their codes (that loop vectorizes; about 2x over the group-by-group
order of C). The neighbour search stays scalar: its lists are short (~8 points), and a
vectorized weight-by-weight version measured slower. The dequantizers flip the sign bit of a
negative weight with an integer xor, as the compiled C does in effect (it turns ``* -1.f`` into
a sign flip: a NaN scale comes out negative), and that loop vectorizes too.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from ..grids_iq3 import IQ3S_GRID, IQ3XXS_GRID, search_state
from ..numpy.iq3 import KSIGNS, GridSearchAbort
from .codec import JitCodec
from .grid_search import GridKernel, block_max, even_signs, grid_fit, grid_rounding, sigma2_of, split_signs
from .numeric import F32, KERNEL, bits_f32, f16_at, f32_bits, nearest_int, put_f16

QK_K = 256
EPS_XXS = F32(1e-8)
GRID_XXS = IQ3XXS_GRID.astype(np.float32)  # (256, 4) dequantization values
GRID_S = IQ3S_GRID.astype(np.float32)      # (512, 4)
MSG_NEIGHBOUR = "ggml aborts on this input (no grid neighbour closer than FLT_MAX: the weights overflow float32)"
MSG_SCALE = "ggml aborts on this input (GGML_ASSERT(scale >= 0): a sub-block scale is NaN)"

grid_rows = grid_rounding(4, 8, 7, 3)  # 8 groups of 4 weights, levels 0..7 packed 3 bits apart
fit = grid_fit(4, 32)                  # sumqx, sumq2 of a 32-weight sub-block


@njit(inline="always")
def search(weight, waux, xval, mx, xxs, kmap, nbrs, gridf, rows, on, rows_t, on_t, lv):
    """The trial scales and the refit of one sub-block: (scale, ok); grid rows in ``rows``."""
    best = F32(0)
    scale = mx / F32(15)
    for k in range(8):
        rows[k] = 0  # L = 0: code 0 is grid row 0 in both grids
        on[k] = xxs
    ntry = 15 if xxs else 9
    for t in range(-ntry, ntry + 1):
        inv = (F32(15) + F32(t) * F32(0.2)) / mx
        if not grid_rows(xval, waux, inv, F32(1) / inv, kmap, nbrs, gridf, rows_t, on_t, False, lv):
            return scale, False
        sumqx, sumq2 = fit(weight, xval, rows_t, gridf)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            for k in range(8):
                rows[k] = rows_t[k]
                on[k] = on_t[k]
    n_off = 0
    for k in range(8):
        if not on[k]:
            n_off += 1
    if n_off > 0 and scale > 0:
        if not grid_rows(xval, waux, F32(1) / scale, scale, kmap, nbrs, gridf, rows, on, xxs, lv):
            return scale, False
        sumqx, sumq2 = fit(weight, xval, rows, gridf)
        if sumq2 > 0:
            scale = sumqx / sumq2
    return scale, True


@njit(**KERNEL)
def quantize_iq3(x, w, out, xxs, kmap, nbrs, gridf):
    """quantize_row_iq3_xxs_impl (``xxs``) or quantize_row_iq3_s_impl over every row of ``x``."""
    rows_n, cols = x.shape
    has_w = w.size > 0
    bsize = 98 if xxs else 110
    weight = np.empty(32, np.float32)
    waux = np.empty(32, np.float32)
    xval = np.empty(32, np.float32)
    scales = np.empty(8, np.float32)
    signs = np.empty(4, np.int64)
    rows = np.empty(8, np.int64)
    rows_t = np.empty(8, np.int64)
    on = np.empty(8, np.bool_)
    on_t = np.empty(8, np.bool_)
    lv = np.empty(32, np.int32)
    for r in range(rows_n):
        for b in range(cols // QK_K):
            xs = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * bsize : (b + 1) * bsize]
            for j in range(bsize):
                o[j] = 0
            sigma2 = sigma2_of(xs, has_w)
            max_scale = F32(0)
            slot = 0  # IQ3_S: where ggml's qs/signs pointers stand
            for ib in range(8):
                xb = xs[32 * ib : 32 * ib + 32]
                if has_w:
                    for j in range(32):
                        weight[j] = w[b * QK_K + 32 * ib + j] * np.sqrt(sigma2 + xb[j] * xb[j])
                else:
                    for j in range(32):
                        weight[j] = xb[j] * xb[j]
                for j in range(32):
                    waux[j] = np.sqrt(weight[j])
                for k in range(4):
                    s, nflip = split_signs(xb, xval, 8 * k)
                    if xxs:
                        if nflip % 2:
                            s = even_signs(xb, weight, xval, 8 * k, s)
                        s &= 127
                    signs[k] = s
                mx = block_max(xval, 32)
                scales[ib] = 0
                if (xxs and mx < EPS_XXS) or (not xxs and mx == 0):
                    continue
                scale, ok = search(weight, waux, xval, mx, xxs, kmap, nbrs, gridf, rows, on, rows_t, on_t, lv)
                if not ok:
                    raise GridSearchAbort(MSG_NEIGHBOUR)
                if scale < 0:
                    scale = -scale
                    for k in range(4):
                        signs[k] = (~signs[k]) & (127 if xxs else 255)
                if not scale >= 0:
                    raise GridSearchAbort(MSG_SCALE)
                if xxs:
                    word = signs[0] | (signs[1] << 7) | (signs[2] << 14) | (signs[3] << 21)
                    for k in range(8):
                        o[2 + 8 * ib + k] = rows[k]
                    for j in range(4):
                        o[66 + 4 * ib + j] = (word >> (8 * j)) & 0xFF
                else:
                    for k in range(8):
                        o[2 + 8 * slot + k] = rows[k] & 255
                        o[66 + ib] |= (rows[k] >> 8) << k
                    for k in range(4):
                        o[74 + 4 * slot + k] = signs[k]
                    slot += 1
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == 0:
                if xxs:
                    for j in range(2, bsize):
                        o[j] = 0
                continue
            d = max_scale / F32(31)
            put_f16(o, 0, d * (F32(1.0125) if xxs else F32(1.033)))
            inv = F32(1) / d
            for ib in range(8):
                l = nearest_int(F32(0.5) * (inv * scales[ib] - F32(1)))
                l = max(0, min(15, l))
                if xxs:
                    o[69 + 4 * ib] |= l << 4
                else:
                    o[106 + ib // 2] |= l << (4 * (ib % 2))
    return 0


@njit(**KERNEL)
def dequantize_iq3_xxs(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 98 : (b + 1) * 98]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 0)
            for ib in range(8):
                p = 66 + 4 * ib
                word = np.int64(blk[p]) | (np.int64(blk[p + 1]) << 8) | (np.int64(blk[p + 2]) << 16) | (np.int64(blk[p + 3]) << 24)
                db = d * (F32(0.5) + F32(word >> 28)) * F32(0.5)
                for l in range(4):
                    sg = KSIGNS[(word >> (7 * l)) & 127]
                    for h in range(2):
                        g = np.int64(blk[2 + 8 * ib + 2 * l + h])
                        for j in range(4):
                            v = db * GRID_XXS[g, j]
                            y[32 * ib + 8 * l + 4 * h + j] = bits_f32(f32_bits(v) ^ (((sg >> (4 * h + j)) & 1) << 31))


@njit(**KERNEL)
def dequantize_iq3_s(data, out):
    rows, cols = out.shape
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 110 : (b + 1) * 110]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 0)
            for ib in range(8):
                db = d * F32(1 + 2 * ((np.int64(blk[106 + ib // 2]) >> (4 * (ib % 2))) & 15))
                qh = np.int64(blk[66 + ib])
                for k in range(8):
                    g = np.int64(blk[2 + 8 * ib + k]) | (((qh >> k) & 1) << 8)
                    sg = np.int64(blk[74 + 4 * ib + k // 2])
                    for j in range(4):
                        v = db * GRID_S[g, j]
                        y[32 * ib + 4 * k + j] = bits_f32(f32_bits(v) ^ (((sg >> (4 * (k % 2) + j)) & 1) << 31))


@functools.cache
def _tables(grid_size: int) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    s = search_state(grid_size)
    return grid_size == 256, s.kmap, s.neighbours, s.grid.astype(np.float32)


class IQ3_XXS(JitCodec, qtype="IQ3_XXS", backend="numba"):
    quantize_kernel = GridKernel(quantize_iq3, "IQ3_XXS", lambda: _tables(256))
    dequantize_kernel = staticmethod(dequantize_iq3_xxs)


class IQ3_S(JitCodec, qtype="IQ3_S", backend="numba"):
    quantize_kernel = GridKernel(quantize_iq3, "IQ3_S", lambda: _tables(512))
    dequantize_kernel = staticmethod(dequantize_iq3_s)
