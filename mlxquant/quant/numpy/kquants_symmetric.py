"""The symmetric K-quants, Q3_K and Q6_K: super-blocks of 256 weights, 16 sub-blocks of 16,
each sub-block ``x ≈ d * sc_j * q`` with no offset. Bit-exact with ggml's
``quantize_row_q{3,6}_K_ref`` (no imatrix, whole chunk) and ``quantize_row_q{3,6}_K_impl``
(imatrix, row by row), and with ``dequantize_row_q{3,6}_K``.

All blocks are processed at once; the sub-block searches run position-major, ``(16, n_groups)``,
so that every sum is accumulated in ggml's order (see :mod:`.search_scale`).
"""

from __future__ import annotations

import numpy as np

from ..codec import Codec
from ..buffers import output
from .numeric import (
    F32,
    GROUP_MAX_EPS,
    bit_planes,
    f16_field,
    field,
    interleave,
    first_absmax,
    fp16_bytes,
    fp16_round,
    ieee,
    nearest_int_c,
    pack_nibbles,
    seq_sum,
)
from .search_scale import q3_quants_t, qx_quants_t, store_codes
from ..types import QK_K

N_SUB = QK_K // 16  # 16 sub-blocks of 16 weights


def _groups_t(x: np.ndarray) -> np.ndarray:
    """(n_blocks, 256) -> (16, n_blocks*16): position within a sub-block first."""
    return np.ascontiguousarray(x.reshape(-1, 16).T)


def _codes_from_t(lt: np.ndarray, nmax: int, n_blocks: int) -> np.ndarray:
    """(16, n_blocks*16) signed codes -> (n_blocks, 256) stored uint8 codes."""
    return np.ascontiguousarray(store_codes(lt, nmax).T).reshape(n_blocks, QK_K)


def _requantize(x: np.ndarray, dq: np.ndarray, L: np.ndarray, nmax: int) -> np.ndarray:
    """ggml's final pass: where ``d = fp16(d)*sc != 0`` the codes become
    ``nmax + clamp(nearest_int(x/d))``; elsewhere (``if (!d) continue``) the search's codes stay.

    x (n, 256) f32, dq (n, 16) f32, L (n, 256) uint8 -> (n, 256) uint8.
    """
    n = x.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = nearest_int_c(x.reshape(n, N_SUB, 16) / dq[:, :, None])  # (n, 16, 16) int32
    np.clip(q, -nmax, nmax - 1, out=q)
    q += nmax
    keep = (dq == 0)[:, :, None]  # NaN d is not '!d': it requantizes (to code nmax), as in C
    return np.where(keep, L.reshape(n, N_SUB, 16), q.astype(np.uint8)).reshape(n, QK_K)


# ------------------------------------------------------------------------------------------------
# Q6_K: 210 bytes per 256 weights
#
#   bytes   0..127  ql[128]     low 4 bits of the 6-bit codes; for half h (0,1), l in 0..31:
#                               ql[64h+l]    = L[128h+l]    & 15 | (L[128h+64+l] & 15) << 4
#                               ql[64h+32+l] = L[128h+32+l] & 15 | (L[128h+96+l] & 15) << 4
#   bytes 128..191  qh[64]      high 2 bits: qh[32h+l] = Σ_k (L[128h+32k+l] >> 4) << 2k
#   bytes 192..207  scales[16]  int8 sub-block scales
#   bytes 208..209  d           fp16 super-block scale
#   weight p = d * scales[p // 16] * (L[p] - 32)
# ------------------------------------------------------------------------------------------------


def _q6_pack(L: np.ndarray, sc: np.ndarray, d: np.ndarray) -> np.ndarray:
    """L (n, 256) uint8 0..63, sc (n, 16) int8, d (n,) f32 -> (n, 210) uint8."""
    n = L.shape[0]
    Lq = L.reshape(n, 2, 4, 32)
    ql = (Lq[:, :, 0:2] & 0xF) | ((Lq[:, :, 2:4] & 0xF) << 4)  # (n, 2, 2, 32)
    hi = Lq >> 4  # (n, 2, 4, 32)
    qh = hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)  # (n, 2, 32)
    out = np.empty((n, 210), dtype=np.uint8)
    out[:, :128] = ql.reshape(n, 128)
    out[:, 128:192] = qh.reshape(n, 64)
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:210] = fp16_bytes(d)
    return out


def _q6_encode(x: np.ndarray, wt: np.ndarray | None) -> np.ndarray:
    """Shared body of the ref and impl quantizers: x (n, 256) f32, wt (16, n*16) or None."""
    n = x.shape[0]
    scales, lt = qx_quants_t(_groups_t(x), 32, 1, wt)  # (n*16,), (16, n*16)
    L = _codes_from_t(lt, 32, n)  # (n, 256) uint8
    scales = scales.reshape(n, N_SUB)
    max_abs, max_scale = first_absmax(scales, axis=1)
    live = max_abs >= GROUP_MAX_EPS  # (n,) blocks that are not all zero
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(-128.0) / max_scale  # (n,)
        d = np.where(live, F32(1.0) / iscale, F32(0.0)).astype(F32)
        sc_i = nearest_int_c(iscale[:, None] * scales)  # (n, 16) int32
    sc = np.where(live[:, None], np.minimum(sc_i, 127), 0).astype(np.int8)
    dq = fp16_round(d)[:, None] * sc.astype(F32)  # (n, 16)
    L = _requantize(x, dq, L, 32)
    out = _q6_pack(L, sc, d)
    out[~live] = 0  # memset: every byte 0 (d = +0.0)
    return out


class Q6_K(Codec, qtype="Q6_K"):
    @classmethod
    @ieee
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        return _q6_encode(np.asarray(x, dtype=F32), None)

    @classmethod
    @ieee
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        rows, cols = x.shape
        nb = cols // QK_K
        # the weights are the imatrix values themselves, the same for every row
        wt = np.ascontiguousarray(
            np.broadcast_to(imatrix.reshape(1, nb * N_SUB, 16), (rows, nb * N_SUB, 16))
            .reshape(-1, 16).T
        )  # (16, rows*nb*16)
        out = _q6_encode(x.reshape(-1, QK_K), wt)
        return out.reshape(rows, nb * 210)

    @classmethod
    @ieee
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """``y = (d * sc) * (q - 32)`` per 16 weights, in C's order (which decides the sign of
        zeros); codes are unpacked with 64-bit word operations."""
        b = np.ascontiguousarray(blocks)
        n = b.shape[0]
        ql = field(b, 0, 128).view(np.uint64).reshape(n, 2, 2, 4)       # (n, h, g, word)
        planes = bit_planes(ql, (0, 4), 0x0F0F0F0F0F0F0F0F)              # (2, n, h, g, 4)
        q = np.empty((n, QK_K), np.uint8)                                # weight 128h + 32k + l,
        interleave(planes, q, (1, 2, 0, 3))                              # k = 2*nibble + g
        qh = field(b, 128, 192).view(np.uint64).reshape(n, 2, 4)
        hb = bit_planes(qh, (0, 2, 4, 6), 0x0303030303030303)             # (4, n, h, 4)
        hb <<= np.uint64(4)
        high = np.empty((n, QK_K), np.uint8)
        interleave(hb, high, (1, 2, 0))
        q |= high
        qi = q.view(np.int8)
        qi -= np.int8(32)
        dl = f16_field(b, 208)[:, None] * field(b, 192, 208).view(np.int8)  # (n, 16) d*sc
        out = output((n, QK_K), F32)
        np.multiply(dl[:, :, None], qi.reshape(n, N_SUB, 16), out=out.reshape(n, N_SUB, 16))
        return out


# ------------------------------------------------------------------------------------------------
# Q3_K: 110 bytes per 256 weights
#
#   bytes   0..31   hmask[32]   bit b of hmask[m] = high bit (code > 3) of weight 32b + m
#   bytes  32..95   qs[64]      low 2 bits: qs[32h+l] = Σ_k (L[128h+32k+l] & 3) << 2k
#   bytes  96..107  scales[12]  16 six-bit scales s_j (stored as sc_j + 32):
#                               scales[j]   = s_j & 15 | (s_{j+8} & 15) << 4      (j < 8)
#                               scales[8+m] = Σ_q (s_{4q+m} >> 4) << 2q          (m < 4)
#   bytes 108..109  d           fp16 super-block scale
#   weight p = d * (s_{p//16} - 32) * (L[p] - 4)
# ------------------------------------------------------------------------------------------------


def _q3_pack(L: np.ndarray, s6: np.ndarray, d: np.ndarray) -> np.ndarray:
    """L (n, 256) uint8 0..7, s6 (n, 16) uint8 0..63, d (n,) f32 -> (n, 110) uint8."""
    n = L.shape[0]
    hb = (L >> 2).reshape(n, 8, 32)  # high bit of each code
    hmask = np.zeros((n, 32), dtype=np.uint8)
    for b in range(8):
        hmask |= hb[:, b] << b
    Lq = (L & 3).reshape(n, 2, 4, 32)
    qs = Lq[:, :, 0] | (Lq[:, :, 1] << 2) | (Lq[:, :, 2] << 4) | (Lq[:, :, 3] << 6)  # (n, 2, 32)
    s_hi = (s6 >> 4).reshape(n, 4, 4)  # [q, m] = s_{4q+m} >> 4
    out = np.empty((n, 110), dtype=np.uint8)
    out[:, :32] = hmask
    out[:, 32:96] = qs.reshape(n, 64)
    out[:, 96:104] = pack_nibbles(s6[:, :8], s6[:, 8:])
    out[:, 104:108] = s_hi[:, 0] | (s_hi[:, 1] << 2) | (s_hi[:, 2] << 4) | (s_hi[:, 3] << 6)
    out[:, 108:110] = fp16_bytes(d)
    return out


def _q3_finish(x: np.ndarray, L: np.ndarray, s6: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Requantize with the stored scales and pack: the common tail of ref and impl."""
    dq = fp16_round(d)[:, None] * (s6.astype(np.int8) - np.int8(32)).astype(F32)  # (n, 16)
    L = _requantize(x, dq, L, 4)
    return _q3_pack(L, s6, d)


def _q3_encode_ref(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    scales, lt = q3_quants_t(_groups_t(x), 4, True)
    L = _codes_from_t(lt, 4, n)  # (n, 256) uint8 0..7
    scales = scales.reshape(n, N_SUB)
    _, max_scale = first_absmax(scales, axis=1)
    live = max_scale != 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(-32.0) / max_scale  # (n,)
        l = nearest_int_c(iscale[:, None] * scales).astype(np.int8)  # (int8_t) cast
        d = np.where(live, F32(1.0) / iscale, F32(0.0)).astype(F32)
    s6 = (np.clip(l, -32, 31) + 32).astype(np.uint8)
    s6[~live] = 0
    return _q3_finish(x, L, s6, d)


def _q3_encode_impl(x: np.ndarray, qw: np.ndarray) -> np.ndarray:
    """x (n, 256) f32 blocks, qw (n, 256) f32 imatrix values for the same columns."""
    n = x.shape[0]
    x2 = x * x
    sumx2 = seq_sum(np.ascontiguousarray(x2.T), axis=0)  # (n,) Σ x², sequential over the 256
    sigma2 = F32(2.0) * sumx2 / F32(QK_K)  # (n,)
    weight = qw * np.sqrt(sigma2[:, None] + x2)  # (n, 256)
    wt = _groups_t(weight)  # (16, n*16)
    sw = seq_sum(wt, axis=0)  # (n*16,) sums of the weights of each sub-block
    scales, lt = qx_quants_t(_groups_t(x), 4, 1, wt)
    L = _codes_from_t(lt, 4, n)
    # the 16 sub-block scales of a block quantized to 6 bits, weighted by the sums of weights
    d_block, ls = qx_quants_t(
        np.ascontiguousarray(scales.reshape(n, N_SUB).T), 32, 1,
        np.ascontiguousarray(sw.reshape(n, N_SUB).T),
    )
    s6 = np.ascontiguousarray(store_codes(ls, 32).T)  # (n, 16) uint8 0..63
    return _q3_finish(x, L, s6, d_block)


class Q3_K(Codec, qtype="Q3_K"):
    @classmethod
    @ieee
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        return _q3_encode_ref(np.asarray(x, dtype=F32))

    @classmethod
    @ieee
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        rows, cols = x.shape
        nb = cols // QK_K
        qw = np.broadcast_to(imatrix.reshape(1, nb, QK_K), (rows, nb, QK_K)).reshape(-1, QK_K)
        out = _q3_encode_impl(x.reshape(-1, QK_K), qw)
        return out.reshape(rows, nb * 110)

    @classmethod
    @ieee
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """``y = (d * (s - 32)) * (q - 4)`` per 16 weights, in C's order."""
        b = np.ascontiguousarray(blocks)
        n = b.shape[0]
        qs = field(b, 32, 96).view(np.uint64).reshape(n, 2, 4)
        planes = bit_planes(qs, (0, 2, 4, 6), 0x0303030303030303)      # (4, n, h, 4)
        q = np.empty((n, QK_K), np.uint8)
        interleave(planes, q, (1, 2, 0))                                # weight 128h + 32k + l
        hm = field(b, 0, 32).view(np.uint64)                            # (n, 4)
        hb = bit_planes(hm, range(8), 0x0101010101010101)               # (8, n, 4)
        hb <<= np.uint64(2)
        high = np.empty((n, QK_K), np.uint8)
        interleave(hb, high, (1, 0))                                    # weight 32b + l
        q |= high
        qi = q.view(np.int8)
        qi -= np.int8(4)                                                # -4..3
        sb = field(b, 96, 108)
        d = f16_field(b, 108)[:, None]
        s_lo = np.concatenate([sb[:, :8] & 0xF, sb[:, :8] >> 4], axis=1)  # (n, 16)
        shifts = (2 * (np.arange(16) // 4)).astype(np.uint8)
        s_hi = (sb[:, 8 + np.arange(16) % 4] >> shifts) & 3               # (n, 16)
        sc = (s_lo | (s_hi << 4)).view(np.int8) - np.int8(32)             # (n, 16) -32..31
        dl = d * sc                                                       # (n, 16) float32
        out = output((n, QK_K), F32)
        np.multiply(dl[:, :, None], qi.reshape(n, N_SUB, 16), out=out.reshape(n, N_SUB, 16))
        return out
