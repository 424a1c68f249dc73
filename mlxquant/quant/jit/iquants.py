"""Compiled non-linear 4-bit types: IQ4_NL (32 weights per block) and IQ4_XS (256 per block).

The loops of ggml-quants.c (``quantize_iq4_nl`` / ``quantize_iq4_xs`` -> ``quantize_row_iq4_nl_impl``
with ``ntry = 7``, ``best_index_int8`` on ``kvalues_iq4nl``; ``dequantize_row_iq4_nl`` /
``dequantize_row_iq4_xs``); block layouts and the exactness argument are in
:mod:`mlxquant.quant.numpy.iquants`.

The 16 scale trials of a sub-block run side by side (trial index innermost, so that each trial's
sums still add position by position as in C, and LLVM vectorizes across trials). Inside a trial
the code value comes from a table on ``floor(2 * id * x)`` (equal to ``best_index_int8``, see the
NumPy module); the final codes use ``best_index_int8`` as written.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..numpy.iquants import KVALUES_IQ4NL
from .codec import JitCodec
from .numeric import F32, GROUP_MAX_EPS, KERNEL, f16_at, nearest_int, put_f16, put_u16

QK_K = 256
NTRY = 7
NTRIALS = 2 * NTRY + 2  # the amax-based scale, then itry = -7..7

KV = KVALUES_IQ4NL.astype(np.float32)
# floor(2v) in [-232, 202] -> code value: twice the midpoints of neighbours are integers.
_MID2 = KVALUES_IQ4NL[:-1].astype(np.int64) + KVALUES_IQ4NL[1:]
LO2 = F32(int(_MID2[0]) - 1)  # -232
HI2 = F32(int(_MID2[-1]))  # 202
OFF2 = 232
Q_TAB = KV[np.searchsorted(_MID2, np.arange(-232, 203), side="right")].astype(np.float32)


@njit(inline="always")
def best_index_int8(x):
    """ggml's best_index_int8(16, kvalues_iq4nl, x) as written (NaN -> 15)."""
    if x <= KV[0]:
        return 0
    if x >= KV[15]:
        return 15
    ml = 0
    mu = 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < KV[mav]:
            mu = mav
        else:
            ml = mav
    if x - KV[mu - 1] < KV[mu] - x:
        return mu - 1
    return mu


@njit(inline="always")
def search_scale(xb, weight, ids2, sumqx, sumq2):
    """The scale search of quantize_row_iq4_nl_impl for one 32-weight sub-block (ntry = 7).

    Returns (scale, ok); ok is False when max |x| < GROUP_MAX_EPS (scale 0, ``continue`` in C).
    """
    amax = F32(0)
    mx = F32(0)
    for j in range(32):
        ax = abs(xb[j])
        if ax > amax:
            amax = ax
            mx = xb[j]
    if amax < GROUP_MAX_EPS:
        return F32(0), False
    d0 = -mx / F32(-127)
    ids2[0] = (F32(1) / d0) * F32(2)
    for t in range(1, NTRIALS):
        ids2[t] = (F32(t - 1 - NTRY - 127) / mx) * F32(2)
    for t in range(NTRIALS):
        sumqx[t] = F32(0)
        sumq2[t] = F32(0)
    for j in range(32):
        xj = xb[j]
        wj = weight[j]
        for t in range(NTRIALS):
            v = ids2[t] * xj
            v = v if v > LO2 else LO2
            v = v if v < HI2 else HI2
            q = Q_TAB[np.int32(np.floor(v)) + OFF2]
            wq = wj * q
            sumqx[t] += wq * xj
            sumq2[t] += wq * q
    sqx = sumqx[0]
    sq2 = sumq2[0]
    d = sqx / sq2 if sq2 > 0 else F32(0)
    best = d * sqx
    for t in range(1, NTRIALS):
        sqx = sumqx[t]
        sq2 = sumq2[t]
        if sq2 > 0 and sqx * sqx > best * sq2:
            d = sqx / sq2
            best = d * sqx
    return d, True


@njit(inline="always")
def set_weights(xb, qw, has_w, sigma2, weight):
    if has_w:
        for j in range(32):
            weight[j] = qw[j] * np.sqrt(sigma2 + xb[j] * xb[j])
    else:
        for j in range(32):
            weight[j] = xb[j] * xb[j]


@njit(inline="always")
def pack_codes(o, pos, L, n):
    for i in range(n // 32):
        for j in range(16):
            o[pos + 16 * i + j] = L[32 * i + j] | (L[32 * i + 16 + j] << 4)


@njit(**KERNEL)
def quantize_iq4_nl(x, w, out):
    rows, cols = x.shape
    has_w = w.size > 0
    L = np.empty(32, np.uint8)
    weight = np.empty(32, np.float32)
    ids2 = np.empty(NTRIALS, np.float32)
    sumqx = np.empty(NTRIALS, np.float32)
    sumq2 = np.empty(NTRIALS, np.float32)
    for r in range(rows):
        for b in range(cols // 32):
            xb = x[r, b * 32 : (b + 1) * 32]
            o = out[r, b * 18 : (b + 1) * 18]
            sigma2 = F32(0)
            if has_w:
                for j in range(32):
                    sigma2 += xb[j] * xb[j]
                sigma2 *= F32(0.0625)  # 2.f/32
            set_weights(xb, w[b * 32 : (b + 1) * 32], has_w, sigma2, weight)
            d, _ = search_scale(xb, weight, ids2, sumqx, sumq2)
            put_f16(o, 0, d)
            idd = F32(1) / d if d != 0 else F32(0)
            for j in range(32):
                L[j] = best_index_int8(idd * xb[j])
            pack_codes(o, 2, L, 32)


@njit(**KERNEL)
def quantize_iq4_xs(x, w, out):
    rows, cols = x.shape
    has_w = w.size > 0
    L = np.empty(QK_K, np.uint8)
    weight = np.empty(32, np.float32)
    scales = np.empty(8, np.float32)
    ids2 = np.empty(NTRIALS, np.float32)
    sumqx = np.empty(NTRIALS, np.float32)
    sumq2 = np.empty(NTRIALS, np.float32)
    for r in range(rows):
        for b in range(cols // QK_K):
            xs = x[r, b * QK_K : (b + 1) * QK_K]
            o = out[r, b * 136 : (b + 1) * 136]
            sigma2 = F32(0)
            if has_w:
                for j in range(QK_K):
                    sigma2 += xs[j] * xs[j]
                sigma2 *= F32(0.0078125)  # 2.f/256
            max_scale = F32(0)
            amax_scale = F32(0)
            for ib in range(8):
                xb = xs[32 * ib : 32 * ib + 32]
                set_weights(xb, w[b * QK_K + 32 * ib : b * QK_K + 32 * ib + 32], has_w, sigma2, weight)
                d, ok = search_scale(xb, weight, ids2, sumqx, sumq2)
                scales[ib] = d
                if not ok:
                    continue
                abs_d = abs(d)
                if abs_d > amax_scale:
                    amax_scale = abs_d
                    max_scale = d
            d = -max_scale / F32(32)
            put_f16(o, 0, d)
            idd = F32(1) / d if d != 0 else F32(0)
            sh = 0
            for ib in range(8):
                l = nearest_int(idd * scales[ib])
                l = max(-32, min(31, l))
                dl = d * F32(l)
                idl = F32(1) / dl if dl != 0 else F32(0)
                for j in range(32):
                    L[32 * ib + j] = best_index_int8(idl * xs[32 * ib + j])
                l += 32
                l_l = l & 0xF
                if ib % 2 == 0:
                    o[4 + ib // 2] = l_l
                else:
                    o[4 + ib // 2] |= l_l << 4
                sh |= (l >> 4) << (2 * ib)
            put_u16(o, 2, sh)
            pack_codes(o, 8, L, QK_K)


# The dequantizers' inner loops run to ``min(16, cols)`` (always 16) rather than a constant: a
# constant trip count makes LLVM unroll them fully into scalar code instead of vectorizing them.


@njit(**KERNEL)
def dequantize_iq4_nl(data, out):
    rows, cols = out.shape
    n16 = min(16, cols)
    for r in range(rows):
        for b in range(cols // 32):
            blk = data[r, b * 18 : (b + 1) * 18]
            y = out[r, b * 32 : (b + 1) * 32]
            d = f16_at(blk, 0)
            for j in range(n16):
                q = blk[2 + j]
                y[j] = d * KV[q & 0xF]
                y[j + 16] = d * KV[q >> 4]


@njit(**KERNEL)
def dequantize_iq4_xs(data, out):
    rows, cols = out.shape
    n16 = min(16, cols)
    for r in range(rows):
        for b in range(cols // QK_K):
            blk = data[r, b * 136 : (b + 1) * 136]
            y = out[r, b * QK_K : (b + 1) * QK_K]
            d = f16_at(blk, 0)
            sh = np.int64(blk[2]) | (np.int64(blk[3]) << 8)
            for ib in range(8):
                ls = ((np.int64(blk[4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
                dl = d * F32(ls - 32)
                yy = y[32 * ib : 32 * ib + 32]
                qs = blk[8 + 16 * ib : 24 + 16 * ib]
                for j in range(n16):
                    q = qs[j]
                    yy[j] = dl * KV[q & 0xF]
                    yy[j + 16] = dl * KV[q >> 4]


class IQ4_NL(JitCodec, qtype="IQ4_NL", backend="numba"):
    quantize_kernel = staticmethod(quantize_iq4_nl)
    dequantize_kernel = staticmethod(dequantize_iq4_nl)


class IQ4_XS(JitCodec, qtype="IQ4_XS", backend="numba"):
    quantize_kernel = staticmethod(quantize_iq4_xs)
    dequantize_kernel = staticmethod(dequantize_iq4_xs)
