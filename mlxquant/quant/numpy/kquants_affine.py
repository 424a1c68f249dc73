"""K-quants with a scale and a min per sub-block: Q2_K, Q4_K, Q5_K (ggml-quants.c).

A 256-weight super-block is split into sub-blocks (16 of 16 for Q2_K, 8 of 32 for Q4_K/Q5_K);
each gets an affine code ``x ~ d*sc*q - dmin*m`` with ``sc, m`` small integers quantized against
two fp16 super-block scales ``d`` and ``dmin``.

* Without an imatrix (``quantize_row_*_ref``): every sub-block is solved by ``make_qkx2_quants``
  and ``sc, m`` are ``nearest_int`` of the scale/min times ``max/nmax`` of the super-block.
* With one (``quantize_row_*_impl``, row by row): weights ``qw * sqrt(sigma2 + x^2)``, sub-blocks
  solved by ``make_qkx3_quants``, and ``sc, m`` by ``make_qp_quants`` weighted by the sums of the
  sub-block weights.
Then every sub-block whose ``d*sc`` is non-zero is re-coded against the stored scales; the others
keep the search's codes (ggml's ``if (!d) continue``).

Block layouts (little-endian):

    Q4_K, 144 bytes            Q5_K, 176 bytes            Q2_K, 84 bytes
    +--------+ 0               +--------+ 0               +-------------+ 0
    | d f16  |                 | d f16  |                 | scales[16]  |  sc | m << 4
    | dmin   | 2               | dmin   | 2               +-------------+ 16
    +--------+ 4               +--------+ 4               | qs[64]      |  4 codes of 2 bits,
    | scales |  12 bytes: 8    | scales | (as Q4_K)       |             |  q[32h+l] holds
    | [12]   |  6-bit sc and   +--------+ 16              |             |  L[128h+32s+l] << 2s
    +--------+ 16  8 6-bit m   | qh[32] |  bit 2c / 2c+1  +-------------+ 80
    | qs[128]|  q[32c+l] =     |        |  of qh[l]: 5th  | d f16       |
    |        |  L[64c+l] |     +--------+ 48  bit of      | dmin f16    |
    |        |  L[64c+32+l]<<4 | qs[128]|  L[64c+l] /     +-------------+ 84
    +--------+ 144             |        |  L[64c+32+l]
                               +--------+ 176  (low 4 bits as Q4_K)

    scales[12] of Q4_K/Q5_K, sub-block j = 0..7 with 6-bit sc[j], m[j]:
      bytes 0-3:  sc[0..3] | (sc[4..7] >> 4) << 6
      bytes 4-7:  m[0..3]  | (m[4..7]  >> 4) << 6
      bytes 8-11: (sc[4..7] & 15) | (m[4..7] & 15) << 4
"""

from __future__ import annotations

import numpy as np

from ..codec import Codec
from ..buffers import output
from .numeric import (
    F32,
    bit_planes,
    f16_field,
    field,
    fp16_bytes,
    fp16_round,
    interleave,
    nearest_int_c,
    seq_sum,
)
from .search_scale_min import make_qp_quants, qkx_search_t

QK_K = 256
_CHUNK = 256  # super-blocks per inner step: keeps the (32, 8*chunk) work arrays in cache


# -- scale packing -------------------------------------------------------------------------------
def pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(nb, 8) uint8 sc and m -> (nb, 12) uint8 as ggml's quantizers write them (uint8 wrap)."""
    out = np.empty((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return out


def unpack_scales_k4(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nb, 12) uint8 -> sc, m (nb, 8) uint8: ggml's ``get_scale_min_k4`` for j = 0..7.

    Works on the three little-endian 32-bit words of each row (four 6-bit fields per word
    operation) instead of 4-byte slices.
    """
    w = np.ascontiguousarray(q, dtype=np.uint8).view("<u4")          # (nb, 3)
    w0, w1, w2 = w[:, 0], w[:, 1], w[:, 2]
    c6, c4, c2 = np.uint32(0x3F3F3F3F), np.uint32(0x0F0F0F0F), np.uint32(0x03030303)
    sc = np.empty((q.shape[0], 2), "<u4")
    m = np.empty_like(sc)
    np.bitwise_and(w0, c6, out=sc[:, 0])
    np.bitwise_and(w1, c6, out=m[:, 0])
    hi = w0 >> np.uint32(6)
    hi &= c2
    hi <<= np.uint32(4)
    hi |= w2 & c4
    sc[:, 1] = hi
    hi = w1 >> np.uint32(6)
    hi &= c2
    hi <<= np.uint32(4)
    lo = w2 >> np.uint32(4)
    lo &= c4
    hi |= lo
    m[:, 1] = hi
    return sc.view(np.uint8), m.view(np.uint8)


def _max_positive(v: np.ndarray) -> np.ndarray:
    """``m = 0; if (v[j] > m) m = v[j]`` over the last axis (always +0.0 when none is > 0)."""
    mx = np.max(v, axis=-1)
    return np.where(mx > 0, mx, F32(0.0)).astype(F32)


def _requantize(
    xt: np.ndarray, d: np.ndarray, dm: np.ndarray, nmax: int, Lt: np.ndarray
) -> np.ndarray:
    """``L = clamp(nearest_int((x + dm)/d), 0, nmax)`` where ``d != 0``; elsewhere keep ``Lt``.

    xt, Lt: (k, n_sub) position-major; d, dm: (n_sub,) float32.
    """
    keep = d == 0
    with np.errstate(all="ignore"):
        l = nearest_int_c((xt + dm) / np.where(keep, F32(1.0), d))
    l = np.clip(l, 0, nmax).astype(np.uint8)
    return np.where(keep, Lt, l)


def _qp_scales_mins(
    scales: np.ndarray, mins: np.ndarray, sw: np.ndarray, nmax: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``make_qp_quants`` of the sub-block scales and of the mins (one batched call).

    scales, mins: (nb * n_sub,) float32; sw: (nb, n_sub) sums of sub-block weights.
    Returns d (nb,), Ls (nb, n_sub) uint8, dmin (nb,), Lm (nb, n_sub) uint8.
    """
    nb, n_sub = sw.shape
    both = np.concatenate([scales.reshape(nb, n_sub), mins.reshape(nb, n_sub)])
    val, L = make_qp_quants(both, nmax, np.concatenate([sw, sw]))
    return val[:nb], L[:nb], val[nb:], L[nb:]


def _sub_weights_impl(x: np.ndarray, qw: np.ndarray, two: bool) -> np.ndarray:
    """``qw * sqrtf(sigma2 + x*x)`` with sigma2 = (2*)sum(x^2)/256 per super-block; (nb, 256)."""
    xx = x * x
    s = seq_sum(np.ascontiguousarray(xx.T), axis=0)                  # (nb,) sequential sum_x2
    sigma2 = ((F32(2.0) * s) if two else s) / F32(QK_K)
    return qw * np.sqrt(sigma2[:, None] + xx)


def _nibble_codes(qs: np.ndarray, n: int) -> np.ndarray:
    """(n, 128) Q4_K/Q5_K code bytes -> (n, 256) uint8 low 4 bits in weight order: byte
    ``32c + l`` holds weight ``64c + l`` (low nibble) and ``64c + 32 + l`` (high nibble)."""
    planes = bit_planes(qs.view(np.uint64).reshape(n, 4, 4), (0, 4), 0x0F0F0F0F0F0F0F0F)
    q = np.empty((n, QK_K), np.uint8)
    interleave(planes, q, (1, 2, 0))                                 # (n, chunk, half)
    return q


class _AffineK(Codec):
    """The drivers shared by Q2_K, Q4_K, Q5_K: ``_ref`` over all super-blocks, ``_impl`` row by
    row; both encode chunks of :data:`_CHUNK` super-blocks with :meth:`_encode_sb`."""

    @classmethod
    def _encode_sb(cls, x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        """(nb, 256) float32 (+ (nb, 256) imatrix) -> (nb, type_size) uint8."""
        raise NotImplementedError

    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=F32)
        parts = [cls._encode_sb(x[i : i + _CHUNK], None) for i in range(0, x.shape[0], _CHUNK)]
        return np.concatenate(parts) if parts else np.empty((0, cls.qtype.type_size), np.uint8)

    @classmethod
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        """Row-by-row ``_impl`` path: the imatrix repeats over the rows' super-blocks."""
        rows, cols = x.shape
        nbr = cols // QK_K
        xs = np.asarray(x, dtype=F32).reshape(rows * nbr, QK_K)
        qw = np.broadcast_to(np.asarray(imatrix, F32).reshape(1, nbr, QK_K), (rows, nbr, QK_K))
        qw = qw.reshape(rows * nbr, QK_K)
        parts = [
            cls._encode_sb(xs[i : i + _CHUNK], qw[i : i + _CHUNK])
            for i in range(0, xs.shape[0], _CHUNK)
        ]
        return np.concatenate(parts).reshape(rows, cls.qtype.row_bytes(cols))


# -- Q4_K and Q5_K -------------------------------------------------------------------------------
class _Q45K(_AffineK):
    """Shared encode path of Q4_K / Q5_K; subclasses set the code width and ggml's parameters."""

    nmax: int
    ref_search: tuple[float, float, int]     # rmin, rdelta, nstep of make_qkx2_quants
    clamp_impl_scales: bool                  # Q5_K's impl applies MIN(63, ls); Q4_K's does not

    @classmethod
    def _encode_sb(cls, x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        """(nb, 256) float32 (+ (nb, 256) imatrix) -> (nb, type_size) uint8."""
        nb = x.shape[0]
        xt = np.ascontiguousarray(x.reshape(nb * 8, 32).T)          # (32, nb*8)
        if qw is None:
            sum_x2 = seq_sum(xt * xt, axis=0)
            av_x = np.sqrt(sum_x2 / F32(32.0))
            wt = av_x + np.abs(xt)
            rmin, rdelta, nstep = cls.ref_search
            scales, mins, Lt = qkx_search_t(xt, wt, cls.nmax, rmin, rdelta, nstep, False)
            scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
            max_scale, max_min = _max_positive(scales), _max_positive(mins)
            with np.errstate(divide="ignore"):
                inv_scale = np.where(max_scale > 0, F32(63.0) / max_scale, F32(0.0))
                inv_min = np.where(max_min > 0, F32(63.0) / max_min, F32(0.0))
            ls = np.minimum(nearest_int_c(inv_scale[:, None] * scales).astype(np.uint8), 63)
            lm = np.minimum(nearest_int_c(inv_min[:, None] * mins).astype(np.uint8), 63)
            d_val = max_scale / F32(63.0)
            m_val = max_min / F32(63.0)
        else:
            w = _sub_weights_impl(x, qw, two=True)                 # (nb, 256)
            wt = np.ascontiguousarray(w.reshape(nb * 8, 32).T)
            sw = seq_sum(wt, axis=0).reshape(nb, 8)
            scales, mins, Lt = qkx_search_t(xt, wt, cls.nmax, -0.9, 0.05, 36, False)
            d_val, ls, m_val, lm = _qp_scales_mins(scales, mins, sw, 63)
            if cls.clamp_impl_scales:
                ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
        sc_bytes = pack_scales_k4(ls, lm)                           # (nb, 12)
        d16, m16 = fp16_round(d_val), fp16_round(m_val)
        sc, m = unpack_scales_k4(sc_bytes)
        d = (d16[:, None] * sc.astype(F32)).reshape(-1)            # (nb*8,)
        dm = (m16[:, None] * m.astype(F32)).reshape(-1)
        Lt = _requantize(xt, d, dm, cls.nmax, Lt)
        L = Lt.T.reshape(nb, QK_K)

        out = np.empty((nb, cls.qtype.type_size), dtype=np.uint8)
        out[:, 0:2] = fp16_bytes(d_val)
        out[:, 2:4] = fp16_bytes(m_val)
        out[:, 4:16] = sc_bytes
        cls._pack_codes(L, out[:, 16:])
        return out

    @classmethod
    def _pack_codes(cls, L: np.ndarray, dst: np.ndarray) -> None:
        raise NotImplementedError

    @classmethod
    def _codes(cls, blocks: np.ndarray) -> np.ndarray:
        """(nb, type_size) uint8 -> (nb, 256) codes in weight order."""
        raise NotImplementedError

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """``y = (d*sc)*q - dmin*m`` per 32-weight sub-block, as dequantize_row_q{4,5}_K; the
        codes are unpacked with 64-bit word operations."""
        b = np.ascontiguousarray(blocks)
        n = b.shape[0]
        sc, m = unpack_scales_k4(field(b, 4, 16))                   # (n, 8) uint8
        d1 = f16_field(b, 0)[:, None] * sc                          # (n, 8) float32
        m1 = f16_field(b, 2)[:, None] * m
        q = cls._codes(b).reshape(n, 8, 32)
        out = output((n, QK_K), F32)
        out3 = out.reshape(n, 8, 32)
        np.multiply(q, d1[:, :, None], out=out3)
        np.subtract(out3, m1[:, :, None], out=out3)
        return out


class Q4_K(_Q45K, qtype="Q4_K"):
    nmax = 15
    ref_search = (-1.0, 0.1, 20)
    clamp_impl_scales = False

    @classmethod
    def _pack_codes(cls, L: np.ndarray, dst: np.ndarray) -> None:
        Lc = L.reshape(-1, 4, 2, 32)                                 # (nb, chunk, half, 32)
        dst[:] = (Lc[:, :, 0] | (Lc[:, :, 1] << 4)).reshape(-1, 128)

    @classmethod
    def _codes(cls, blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        return _nibble_codes(field(blocks, 16, 144), n)


class Q5_K(_Q45K, qtype="Q5_K"):
    nmax = 31
    ref_search = (-0.5, 0.1, 15)
    clamp_impl_scales = True

    @classmethod
    def _pack_codes(cls, L: np.ndarray, dst: np.ndarray) -> None:
        Lc = L.reshape(-1, 4, 2, 32)                                 # (nb, chunk, half, 32)
        hi = (Lc > 15).astype(np.uint8)
        shifts = (np.arange(8, dtype=np.uint8)).reshape(1, 4, 2, 1)  # bit 2c + half
        dst[:, 0:32] = np.bitwise_or.reduce((hi << shifts).reshape(-1, 8, 32), axis=1)
        lo = Lc & 0xF
        dst[:, 32:160] = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(-1, 128)

    @classmethod
    def _codes(cls, blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        q = _nibble_codes(field(blocks, 48, 176), n)                 # (n, 256) low 4 bits
        hb = bit_planes(field(blocks, 16, 48).view(np.uint64), range(8), 0x0101010101010101)
        hb <<= np.uint64(4)                                          # (8, n, 4): bit j of qh[l]
        fifth = np.empty((n, QK_K), np.uint8)
        interleave(hb, fifth, (1, 0))                                # weight 32j + l
        q |= fifth
        return q


# -- Q2_K ----------------------------------------------------------------------------------------
class Q2_K(_AffineK, qtype="Q2_K"):
    @classmethod
    def _encode_sb(cls, x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
        """(nb, 256) float32 (+ (nb, 256) imatrix) -> (nb, 84) uint8."""
        nb = x.shape[0]
        xt = np.ascontiguousarray(x.reshape(nb * 16, 16).T)         # (16, nb*16)
        if qw is None:
            wt = np.abs(xt)
            scales, mins, Lt = qkx_search_t(xt, wt, 3, -0.5, 0.1, 15, True)
            scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
            max_scale, max_min = _max_positive(scales), _max_positive(mins)
            with np.errstate(divide="ignore"):
                isc = np.where(max_scale > 0, F32(15.0) / max_scale, F32(0.0))
                imn = np.where(max_min > 0, F32(15.0) / max_min, F32(0.0))
            ls = np.where((max_scale > 0)[:, None], nearest_int_c(isc[:, None] * scales), 0)
            lm = nearest_int_c(imn[:, None] * mins)
            byte = np.where((max_min > 0)[:, None], ls | (lm << 4), ls) & 0xFF
            sc_bytes = byte.astype(np.uint8)                          # (nb, 16)
            d_val = np.where(max_scale > 0, max_scale / F32(15.0), F32(0.0))
            m_val = np.where(max_min > 0, max_min / F32(15.0), F32(0.0))
        else:
            w = _sub_weights_impl(x, qw, two=False)
            wt = np.ascontiguousarray(w.reshape(nb * 16, 16).T)
            sw = seq_sum(wt, axis=0).reshape(nb, 16)
            scales, mins, Lt = qkx_search_t(xt, wt, 3, -0.9, 0.05, 36, False)
            d_val, ls, m_val, lm = _qp_scales_mins(scales, mins, sw, 15)
            sc_bytes = ls | (lm << 4)                                 # uint8 wrap like C
        d16, m16 = fp16_round(d_val), fp16_round(m_val)
        d = (d16[:, None] * (sc_bytes & 0xF).astype(F32)).reshape(-1)  # (nb*16,)
        dm = (m16[:, None] * (sc_bytes >> 4).astype(F32)).reshape(-1)
        Lt = _requantize(xt, d, dm, 3, Lt)
        L = Lt.T.reshape(nb, 2, 4, 32)                               # (nb, half, shift, 32)

        out = np.empty((nb, 84), dtype=np.uint8)
        out[:, 0:16] = sc_bytes
        out[:, 16:80] = (
            L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)
        ).reshape(nb, 64)
        out[:, 80:82] = fp16_bytes(d_val)
        out[:, 82:84] = fp16_bytes(m_val)
        return out

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """``y = (d*(sc & 15))*q - dmin*(sc >> 4)`` per 16 weights (dequantize_row_q2_K)."""
        b = np.ascontiguousarray(blocks)
        n = b.shape[0]
        sc = field(b, 0, 16)                                          # (n, 16)
        d = f16_field(b, 80)[:, None]
        dmin = f16_field(b, 82)[:, None]
        planes = bit_planes(field(b, 16, 80).view(np.uint64).reshape(n, 2, 4), (0, 2, 4, 6),
                            0x0303030303030303)                      # (4, n, half, 4)
        q = np.empty((n, QK_K), np.uint8)
        interleave(planes, q, (1, 2, 0))                              # weight 128h + 32s + l
        dl = d * (sc & np.uint8(15))                                    # (n, 16) float32
        ml = dmin * (sc >> 4)
        out = output((n, QK_K), F32)
        out3 = out.reshape(n, 16, 16)
        np.multiply(q.reshape(n, 16, 16), dl[:, :, None], out=out3)
        np.subtract(out3, ml[:, :, None], out=out3)
        return out
