"""The symmetric K-quants Q3_K and Q6_K on MLX arrays (twin of
``mlxquant/quant/numpy/kquants_symmetric.py``: same algorithm, same function names, same bytes).

Bit-exact with ggml's ``quantize_row_q{3,6}_K_ref`` (no imatrix) and ``quantize_row_q{3,6}_K_impl``
(imatrix), and with ``dequantize_row_q{3,6}_K``. Block layouts are drawn in the NumPy module.

Rows are processed in chunks of about :data:`CHUNK_WEIGHTS` weights, each evaluated with
``mx.eval`` before the next one is built (:func:`~.codec.in_chunks`), which bounds the graph and
the memory. Nothing is ``mx.compile``d (see :mod:`.search_scale` on FMA contraction).
"""

from __future__ import annotations

import mlx.core as mx

from ..codec import Codec
from ..types import QK_K
from .codec import in_chunks
from .numeric import (
    F32,
    GROUP_MAX_EPS,
    first_absmax,
    fp16_bytes,
    fp16_from_bytes,
    fp16_round,
    nearest_int_c,
    pack_nibbles,
    seq_sum,
)
from .search_scale import q3_quants_t, qx_quants_t, store_codes

N_SUB = QK_K // 16  # 16 sub-blocks of 16 weights

# Weights per evaluated chunk: large enough to amortize MLX's per-op cost (the searches are
# thousands of small ops), small enough to bound the memory. Measured on the 2-core CPU
# (256x4096 normal): Q6_K 1.1 / 3.5 / 6.1 / 5.6 and Q3_K 0.6 / 2.1 / 5.3 / 8.2 million
# weights/s at 2**14 / 2**16 / 2**18 / 2**20 (Q3_K's coordinate descent is ~1,600 ops per chunk).
CHUNK_WEIGHTS = {"Q6_K": 1 << 18, "Q3_K": 1 << 20}


def _groups_t(x: mx.array) -> mx.array:
    """(n_blocks, 256) -> (16, n_blocks*16): position within a sub-block first."""
    return mx.contiguous(x.reshape(-1, 16).T)


def _codes_from_t(lt: mx.array, nmax: int, n_blocks: int) -> mx.array:
    """(16, n_blocks*16) signed codes -> (n_blocks, 256) stored uint8 codes."""
    return store_codes(lt, nmax).T.reshape(n_blocks, QK_K)


def _requantize(x: mx.array, dq: mx.array, L: mx.array, nmax: int) -> mx.array:
    """ggml's final pass: where ``d = fp16(d)*sc != 0`` the codes become
    ``nmax + clamp(nearest_int(x/d))``; elsewhere (``if (!d) continue``) the search's codes stay.

    x (n, 256) f32, dq (n, 16) f32, L (n, 256) uint8 -> (n, 256) uint8.
    """
    n = x.shape[0]
    q = nearest_int_c(x.reshape(n, N_SUB, 16) / dq[:, :, None])  # (n, 16, 16) int32
    q = (mx.clip(q, -nmax, nmax - 1) + nmax).astype(mx.uint8)
    keep = (dq == 0)[:, :, None]  # NaN d is not '!d': it requantizes (to code nmax), as in C
    return mx.where(keep, L.reshape(n, N_SUB, 16), q).reshape(n, QK_K)


def _rows_chunked(fn, x: mx.array, imatrix: mx.array | None, qtype: str) -> mx.array:
    """``fn(x_rows, imatrix)`` -> (r * blocks per row, type_size) uint8 over row chunks of about
    ``CHUNK_WEIGHTS[qtype]`` weights (:func:`~.codec.in_chunks`), as (rows, row bytes)."""
    rows, cols = x.shape
    out = in_chunks(lambda r0, r1: fn(x[r0:r1], imatrix), rows, cols, CHUNK_WEIGHTS[qtype])
    return out.reshape(rows, cols // QK_K * out.shape[-1])


# ------------------------------------------------------------------------------------------------
# Q6_K: 210 bytes per 256 weights (layout in the NumPy module)
# ------------------------------------------------------------------------------------------------


def _q6_pack(L: mx.array, sc: mx.array, d: mx.array) -> mx.array:
    """L (n, 256) uint8 0..63, sc (n, 16) int8, d (n,) f32 -> (n, 210) uint8."""
    n = L.shape[0]
    Lq = L.reshape(n, 2, 4, 32)
    ql = (Lq[:, :, 0:2] & 0xF) | ((Lq[:, :, 2:4] & 0xF) << 4)  # (n, 2, 2, 32)
    hi = Lq >> 4  # (n, 2, 4, 32)
    qh = hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)  # (n, 2, 32)
    return mx.concatenate(
        [ql.reshape(n, 128), qh.reshape(n, 64), sc.view(mx.uint8), fp16_bytes(d)], axis=1
    )


def _q6_encode(x: mx.array, wt: mx.array | None) -> mx.array:
    """Shared body of the ref and impl quantizers: x (n, 256) f32, wt (16, n*16) or None."""
    n = x.shape[0]
    scales, lt = qx_quants_t(_groups_t(x), 32, 1, wt)  # (n*16,), (16, n*16)
    L = _codes_from_t(lt, 32, n)  # (n, 256) uint8
    scales = scales.reshape(n, N_SUB)
    max_abs, max_scale = first_absmax(scales, axis=1)
    live = max_abs >= GROUP_MAX_EPS  # (n,) blocks that are not all zero
    iscale = -128.0 / max_scale  # (n,)
    d = mx.where(live, 1.0 / iscale, 0.0)
    sc_i = nearest_int_c(iscale[:, None] * scales)  # (n, 16) int32
    sc = mx.where(live[:, None], mx.minimum(sc_i, 127), 0).astype(mx.int8)
    dq = fp16_round(d)[:, None] * sc.astype(F32)  # (n, 16)
    L = _requantize(x, dq, L, 32)
    out = _q6_pack(L, sc, d)
    return mx.where(live[:, None], out, mx.array(0, dtype=mx.uint8))  # memset: all bytes 0


def _q6_rows(x: mx.array, imatrix: mx.array | None) -> mx.array:
    rows, cols = x.shape
    nb = cols // QK_K
    wt = None
    if imatrix is not None:
        # the weights are the imatrix values themselves, the same for every row
        wt = mx.contiguous(
            mx.broadcast_to(imatrix.reshape(1, nb * N_SUB, 16), (rows, nb * N_SUB, 16))
            .reshape(-1, 16).T
        )  # (16, rows*nb*16)
    return _q6_encode(x.reshape(-1, QK_K), wt)


class Q6_K(Codec, qtype="Q6_K", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        return _rows_chunked(_q6_rows, x.astype(F32).reshape(-1, QK_K), None, "Q6_K")

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        return _rows_chunked(_q6_rows, x.astype(F32), imatrix.astype(F32), "Q6_K")

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        n = blocks.shape[0]
        ql = blocks[:, :128].reshape(n, 2, 2, 32)
        qh = blocks[:, 128:192].reshape(n, 2, 1, 32)
        lo = mx.concatenate([ql & 0xF, ql >> 4], axis=2)  # (n, 2, 4, 32)
        shifts = mx.array([0, 2, 4, 6], dtype=mx.uint8).reshape(1, 1, 4, 1)
        hi = (qh >> shifts) & 3
        q = (lo | (hi << 4)).astype(mx.int8) - 32  # (n, 2, 4, 32) int8
        sc = mx.contiguous(blocks[:, 192:208]).view(mx.int8).astype(F32)  # (n, 16)
        d = fp16_from_bytes(blocks[:, 208:210])  # (n,)
        dl = d[:, None] * sc  # (n, 16): C's d * sc[is], then * q
        return (dl[:, :, None] * q.reshape(n, N_SUB, 16).astype(F32)).reshape(n, QK_K)


# ------------------------------------------------------------------------------------------------
# Q3_K: 110 bytes per 256 weights (layout in the NumPy module)
# ------------------------------------------------------------------------------------------------


def _q3_pack(L: mx.array, s6: mx.array, d: mx.array) -> mx.array:
    """L (n, 256) uint8 0..7, s6 (n, 16) uint8 0..63, d (n,) f32 -> (n, 110) uint8."""
    n = L.shape[0]
    hb = (L >> 2).reshape(n, 8, 32)  # high bit of each code
    hmask = hb[:, 0]
    for b in range(1, 8):
        hmask = hmask | (hb[:, b] << b)
    Lq = (L & 3).reshape(n, 2, 4, 32)
    qs = Lq[:, :, 0] | (Lq[:, :, 1] << 2) | (Lq[:, :, 2] << 4) | (Lq[:, :, 3] << 6)  # (n, 2, 32)
    s_hi = (s6 >> 4).reshape(n, 4, 4)  # [q, m] = s_{4q+m} >> 4
    return mx.concatenate(
        [
            hmask,
            qs.reshape(n, 64),
            pack_nibbles(s6[:, :8], s6[:, 8:]),
            s_hi[:, 0] | (s_hi[:, 1] << 2) | (s_hi[:, 2] << 4) | (s_hi[:, 3] << 6),
            fp16_bytes(d),
        ],
        axis=1,
    )


def _q3_finish(x: mx.array, L: mx.array, s6: mx.array, d: mx.array) -> mx.array:
    """Requantize with the stored scales and pack: the common tail of ref and impl."""
    dq = fp16_round(d)[:, None] * (s6.astype(mx.int32) - 32).astype(F32)  # (n, 16)
    L = _requantize(x, dq, L, 4)
    return _q3_pack(L, s6, d)


def _q3_encode_ref(x: mx.array) -> mx.array:
    n = x.shape[0]
    scales, lt = q3_quants_t(_groups_t(x), 4, True)
    L = _codes_from_t(lt, 4, n)  # (n, 256) uint8 0..7
    scales = scales.reshape(n, N_SUB)
    _, max_scale = first_absmax(scales, axis=1)
    live = max_scale != 0
    iscale = -32.0 / max_scale  # (n,)
    l = nearest_int_c(iscale[:, None] * scales).astype(mx.int8)  # (int8_t) cast: wraps
    d = mx.where(live, 1.0 / iscale, 0.0)
    s6 = (mx.clip(l.astype(mx.int32), -32, 31) + 32).astype(mx.uint8)
    s6 = mx.where(live[:, None], s6, mx.array(0, dtype=mx.uint8))
    return _q3_finish(x, L, s6, d)


def _q3_encode_impl(x: mx.array, qw: mx.array) -> mx.array:
    """x (n, 256) f32 blocks, qw (n, 256) f32 imatrix values for the same columns."""
    n = x.shape[0]
    x2 = x * x
    sumx2 = seq_sum(mx.contiguous(x2.T), axis=0)  # (n,) Σ x², sequential over the 256
    sigma2 = 2.0 * sumx2 / float(QK_K)  # (n,): C's 2*sumx2/QK_K
    weight = qw * mx.sqrt(sigma2[:, None] + x2)  # (n, 256)
    wt = _groups_t(weight)  # (16, n*16)
    sw = seq_sum(wt, axis=0)  # (n*16,) sums of the weights of each sub-block
    scales, lt = qx_quants_t(_groups_t(x), 4, 1, wt)
    L = _codes_from_t(lt, 4, n)
    # the 16 sub-block scales of a block quantized to 6 bits, weighted by the sums of weights
    d_block, ls = qx_quants_t(
        mx.contiguous(scales.reshape(n, N_SUB).T), 32, 1, mx.contiguous(sw.reshape(n, N_SUB).T)
    )
    s6 = store_codes(ls, 32).T  # (n, 16) uint8 0..63
    return _q3_finish(x, L, s6, d_block)


def _q3_rows(x: mx.array, imatrix: mx.array | None) -> mx.array:
    if imatrix is None:
        return _q3_encode_ref(x.reshape(-1, QK_K))
    rows, cols = x.shape
    nb = cols // QK_K
    qw = mx.broadcast_to(imatrix.reshape(1, nb, QK_K), (rows, nb, QK_K)).reshape(-1, QK_K)
    return _q3_encode_impl(x.reshape(-1, QK_K), qw)


class Q3_K(Codec, qtype="Q3_K", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        return _rows_chunked(_q3_rows, x.astype(F32).reshape(-1, QK_K), None, "Q3_K")

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        return _rows_chunked(_q3_rows, x.astype(F32), imatrix.astype(F32), "Q3_K")

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        n = blocks.shape[0]
        hmask = blocks[:, :32]
        qs = blocks[:, 32:96].reshape(n, 2, 1, 32)
        sb = blocks[:, 96:108].astype(mx.int32)
        d = fp16_from_bytes(blocks[:, 108:110])  # (n,)
        s_lo = mx.concatenate([sb[:, :8] & 0xF, sb[:, :8] >> 4], axis=1)  # (n, 16)
        j = mx.arange(16, dtype=mx.int32)
        s_hi = (sb[:, 8 + j % 4] >> (2 * (j // 4))) & 3  # (n, 16)
        sc = ((s_lo | (s_hi << 4)) - 32).astype(F32)  # 6-bit value - 32
        dl = d[:, None] * sc  # (n, 16)
        k2 = mx.arange(4, dtype=mx.uint8).reshape(1, 1, 4, 1)
        low = ((qs >> (2 * k2)) & 3).reshape(n, 8, 32).astype(mx.int32)  # (n, 8, 32)
        bits = (hmask[:, None, :] >> mx.arange(8, dtype=mx.uint8).reshape(1, 8, 1)) & 1
        q = low - mx.where(bits == 1, 0, 4)
        return (dl[:, :, None] * q.reshape(n, N_SUB, 16).astype(F32)).reshape(n, QK_K)
