"""Q2_K, Q4_K, Q5_K on MLX arrays (twin of ``mlxquant/quant/numpy/kquants_affine.py``).

The same algorithm, function for function, as the NumPy reference (see its docstring for the
block layouts and for ggml's ``_ref`` / ``_impl`` paths); every step is an ``mx.array`` op and the
bytes are the NumPy (= ggml) bytes. Super-blocks are processed in chunks of :data:`_CHUNK`, each
chunk evaluated before the next so the lazy graph and the work arrays stay bounded.

Nothing is ``mx.compile``d: the search is a few thousand small elementwise ops per chunk, and a
fused kernel could contract ``a*b + c`` into a fused multiply-add (allowed to the Metal compiler
in fused code), which changes rounding decisions. Uncompiled, each MLX op rounds its result to
float32 like the C code.
"""

from __future__ import annotations

import mlx.core as mx

from ..codec import Codec
from .codec import in_chunks
from .numeric import fp16_bytes, fp16_from_bytes, fp16_round, nearest_int_c, seq_sum
from .search_scale_min import make_qp_quants, qkx_search_t

QK_K = 256
# Super-blocks per evaluated chunk: large enough that per-op overhead (a few thousand ops per
# chunk) is small, small enough to bound memory ((32, 8*chunk) float32 work arrays). On the CPU
# here 2048 was fastest (1024: -15%, 8192: -20%); on a GPU, launches cost more than bandwidth, so
# chunks are larger there (16384 super-blocks = 4M weights, ~16 MB work arrays: not measured,
# no GPU on the project's machines).
_CHUNK = 2048
_CHUNK_GPU = 16384


def _chunk() -> int:
    return _CHUNK_GPU if mx.default_device().type == mx.DeviceType.gpu else _CHUNK


# -- scale packing -------------------------------------------------------------------------------
def pack_scales_k4(ls: mx.array, lm: mx.array) -> mx.array:
    """(nb, 8) uint8 sc and m -> (nb, 12) uint8 as ggml's quantizers write them (uint8 wrap)."""
    return mx.concatenate(
        [
            ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6),
            lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6),
            (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4),
        ],
        axis=1,
    )


def unpack_scales_k4(q: mx.array) -> tuple[mx.array, mx.array]:
    """(nb, 12) uint8 -> sc, m (nb, 8) uint8: ggml's ``get_scale_min_k4`` for j = 0..7."""
    sc = mx.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 0xF) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    m = mx.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def _max_positive(v: mx.array) -> mx.array:
    """``m = 0; if (v[j] > m) m = v[j]`` over the last axis (always +0.0 when none is > 0)."""
    m = mx.max(v, axis=-1)                                          # order-free: only > 0 kept
    return mx.where(m > 0, m, 0.0)


def _requantize(xt: mx.array, d: mx.array, dm: mx.array, nmax: int, Lt: mx.array) -> mx.array:
    """``L = clamp(nearest_int((x + dm)/d), 0, nmax)`` where ``d != 0``; elsewhere keep ``Lt``.

    xt, Lt: (k, n_sub) position-major; d, dm: (n_sub,) float32.
    """
    keep = d == 0
    l = nearest_int_c((xt + dm) / mx.where(keep, 1.0, d))
    l = mx.clip(l, 0, nmax).astype(mx.uint8)
    return mx.where(keep, Lt, l)


def _qp_scales_mins(
    scales: mx.array, mins: mx.array, sw: mx.array, nmax: int
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """``make_qp_quants`` of the sub-block scales and of the mins (one batched call).

    scales, mins: (nb * n_sub,) float32; sw: (nb, n_sub) sums of sub-block weights.
    Returns d (nb,), Ls (nb, n_sub) uint8, dmin (nb,), Lm (nb, n_sub) uint8.
    """
    nb, n_sub = sw.shape
    both = mx.concatenate([scales.reshape(nb, n_sub), mins.reshape(nb, n_sub)])
    val, L = make_qp_quants(both, nmax, mx.concatenate([sw, sw]))
    return val[:nb], L[:nb], val[nb:], L[nb:]


def _sub_weights_impl(x: mx.array, qw: mx.array, two: bool) -> mx.array:
    """``qw * sqrtf(sigma2 + x*x)`` with sigma2 = (2*)sum(x^2)/256 per super-block; (nb, 256)."""
    xx = x * x
    s = seq_sum(mx.contiguous(xx.T), axis=0)                        # (nb,) sequential sum_x2
    sigma2 = ((2.0 * s) if two else s) / float(QK_K)
    return qw * mx.sqrt(sigma2[:, None] + xx)


class _AffineK(Codec):
    """The drivers shared by Q2_K, Q4_K, Q5_K: ``_ref`` over all super-blocks, ``_impl`` row by
    row; both encode chunks of :func:`_chunk` super-blocks with :meth:`_encode_sb`, each chunk
    evaluated before the next (:func:`~.codec.in_chunks`)."""

    @classmethod
    def _encode_sb(cls, x: mx.array, qw: mx.array | None) -> mx.array:
        """(nb, 256) float32 (+ (nb, 256) imatrix) -> (nb, type_size) uint8."""
        raise NotImplementedError

    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        x = x.astype(mx.float32)
        return in_chunks(lambda i, j: cls._encode_sb(x[i:j], None), x.shape[0], QK_K, _chunk() * QK_K)

    @classmethod
    def encode_rows_weighted(cls, x: mx.array, imatrix: mx.array) -> mx.array:
        """Row-by-row ``_impl`` path: the imatrix repeats over the rows' super-blocks.

        Chunks are whole rows, so the repeated imatrix is materialized for one chunk at a time.
        """
        rows, cols = x.shape
        nbr = cols // QK_K
        x = x.astype(mx.float32)
        qw_row = imatrix.astype(mx.float32).reshape(1, nbr, QK_K)

        def chunk(r0: int, r1: int) -> mx.array:
            nb = (r1 - r0) * nbr  # explicit shapes: MLX cannot infer -1 for an empty chunk
            qw = mx.broadcast_to(qw_row, (r1 - r0, nbr, QK_K)).reshape(nb, QK_K)
            return cls._encode_sb(x[r0:r1].reshape(nb, QK_K), qw)

        out = in_chunks(chunk, rows, cols, _chunk() * QK_K)
        return out.reshape(rows, cls.qtype.row_bytes(cols))


# -- Q4_K and Q5_K -------------------------------------------------------------------------------
class _Q45K(_AffineK):
    """Shared encode path of Q4_K / Q5_K; subclasses set the code width and ggml's parameters."""

    nmax: int
    ref_search: tuple[float, float, int]     # rmin, rdelta, nstep of make_qkx2_quants
    clamp_impl_scales: bool                  # Q5_K's impl applies MIN(63, ls); Q4_K's does not

    @classmethod
    def _encode_sb(cls, x: mx.array, qw: mx.array | None) -> mx.array:
        """(nb, 256) float32 (+ (nb, 256) imatrix) -> (nb, type_size) uint8."""
        nb = x.shape[0]
        xt = mx.contiguous(x.reshape(nb * 8, 32).T)                 # (32, nb*8)
        if qw is None:
            sum_x2 = seq_sum(xt * xt, axis=0)
            av_x = mx.sqrt(sum_x2 / 32.0)
            wt = av_x + mx.abs(xt)
            rmin, rdelta, nstep = cls.ref_search
            scales, mins, Lt = qkx_search_t(xt, wt, cls.nmax, rmin, rdelta, nstep, False)
            scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
            max_scale, max_min = _max_positive(scales), _max_positive(mins)
            inv_scale = mx.where(max_scale > 0, 63.0 / max_scale, 0.0)
            inv_min = mx.where(max_min > 0, 63.0 / max_min, 0.0)
            # C: uint8_t ls = nearest_int(...); ls = MIN(63, ls) -- the cast comes first
            ls = mx.minimum(nearest_int_c(inv_scale[:, None] * scales).astype(mx.uint8), 63)
            lm = mx.minimum(nearest_int_c(inv_min[:, None] * mins).astype(mx.uint8), 63)
            d_val = max_scale / 63.0
            m_val = max_min / 63.0
        else:
            w = _sub_weights_impl(x, qw, two=True)                  # (nb, 256)
            wt = mx.contiguous(w.reshape(nb * 8, 32).T)
            sw = seq_sum(wt, axis=0).reshape(nb, 8)
            scales, mins, Lt = qkx_search_t(xt, wt, cls.nmax, -0.9, 0.05, 36, False)
            d_val, ls, m_val, lm = _qp_scales_mins(scales, mins, sw, 63)
            if cls.clamp_impl_scales:
                ls, lm = mx.minimum(ls, 63), mx.minimum(lm, 63)
        sc_bytes = pack_scales_k4(ls, lm)                            # (nb, 12)
        d16, m16 = fp16_round(d_val), fp16_round(m_val)
        sc, m = unpack_scales_k4(sc_bytes)
        d = (d16[:, None] * sc.astype(mx.float32)).reshape(-1)      # (nb*8,)
        dm = (m16[:, None] * m.astype(mx.float32)).reshape(-1)
        Lt = _requantize(xt, d, dm, cls.nmax, Lt)
        L = Lt.T.reshape(nb, QK_K)
        return mx.concatenate(
            [fp16_bytes(d_val), fp16_bytes(m_val), sc_bytes, cls._pack_codes(L)], axis=1
        )

    @classmethod
    def _pack_codes(cls, L: mx.array) -> mx.array:
        """(nb, 256) uint8 codes -> (nb, type_size - 16) uint8."""
        raise NotImplementedError

    @classmethod
    def _codes(cls, blocks: mx.array) -> mx.array:
        """(nb, type_size) uint8 -> (nb, 256) codes in weight order."""
        raise NotImplementedError

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        d = fp16_from_bytes(blocks[:, 0:2])
        dmin = fp16_from_bytes(blocks[:, 2:4])
        sc, m = unpack_scales_k4(blocks[:, 4:16])
        d1 = (d[:, None] * sc.astype(mx.float32))[:, :, None]        # (nb, 8, 1)
        m1 = (dmin[:, None] * m.astype(mx.float32))[:, :, None]
        q = cls._codes(blocks).reshape(-1, 8, 32).astype(mx.float32)
        return (d1 * q - m1).reshape(-1, QK_K)


class Q4_K(_Q45K, qtype="Q4_K", backend="mlx"):
    nmax = 15
    ref_search = (-1.0, 0.1, 20)
    clamp_impl_scales = False

    @classmethod
    def _pack_codes(cls, L: mx.array) -> mx.array:
        Lc = L.reshape(-1, 4, 2, 32)                                 # (nb, chunk, half, 32)
        return (Lc[:, :, 0] | (Lc[:, :, 1] << 4)).reshape(-1, 128)

    @classmethod
    def _codes(cls, blocks: mx.array) -> mx.array:
        qs = blocks[:, 16:144].reshape(-1, 4, 1, 32)                  # (nb, chunk, 1, 32)
        return mx.concatenate([qs & 0xF, qs >> 4], axis=2).reshape(-1, QK_K)


_SHIFTS8 = mx.arange(8, dtype=mx.uint8).reshape(1, 4, 2, 1)          # bit 2c + half of qh


class Q5_K(_Q45K, qtype="Q5_K", backend="mlx"):
    nmax = 31
    ref_search = (-0.5, 0.1, 15)
    clamp_impl_scales = True

    @classmethod
    def _pack_codes(cls, L: mx.array) -> mx.array:
        Lc = L.reshape(-1, 4, 2, 32)                                 # (nb, chunk, half, 32)
        hi = (Lc > 15).astype(mx.uint8) << _SHIFTS8                  # distinct bits: sum == or
        qh = mx.sum(hi.reshape(-1, 8, 32), axis=1).astype(mx.uint8)  # (nb, 32)
        lo = Lc & 0xF
        qs = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(-1, 128)
        return mx.concatenate([qh, qs], axis=1)

    @classmethod
    def _codes(cls, blocks: mx.array) -> mx.array:
        qh = blocks[:, 16:48].reshape(-1, 1, 1, 32)
        qs = blocks[:, 48:176].reshape(-1, 4, 1, 32)
        lo = mx.concatenate([qs & 0xF, qs >> 4], axis=2)               # (nb, 4, 2, 32)
        return (lo + (((qh >> _SHIFTS8) & 1) << 4)).reshape(-1, QK_K)


# -- Q2_K ----------------------------------------------------------------------------------------
_SHIFTS4 = (2 * mx.arange(4, dtype=mx.uint8)).reshape(1, 1, 4, 1)


class Q2_K(_AffineK, qtype="Q2_K", backend="mlx"):
    @classmethod
    def _encode_sb(cls, x: mx.array, qw: mx.array | None) -> mx.array:
        """(nb, 256) float32 (+ (nb, 256) imatrix) -> (nb, 84) uint8."""
        nb = x.shape[0]
        xt = mx.contiguous(x.reshape(nb * 16, 16).T)                # (16, nb*16)
        if qw is None:
            wt = mx.abs(xt)
            scales, mins, Lt = qkx_search_t(xt, wt, 3, -0.5, 0.1, 15, True)
            scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
            max_scale, max_min = _max_positive(scales), _max_positive(mins)
            has_s, has_m = max_scale > 0, max_min > 0
            isc = mx.where(has_s, 15.0 / max_scale, 0.0)
            imn = mx.where(has_m, 15.0 / max_min, 0.0)
            ls = mx.where(has_s[:, None], nearest_int_c(isc[:, None] * scales), 0)
            lm = nearest_int_c(imn[:, None] * mins)
            byte = mx.where(has_m[:, None], ls | (lm << 4), ls) & 0xFF
            sc_bytes = byte.astype(mx.uint8)                           # (nb, 16)
            d_val = mx.where(has_s, max_scale / 15.0, 0.0)
            m_val = mx.where(has_m, max_min / 15.0, 0.0)
        else:
            w = _sub_weights_impl(x, qw, two=False)
            wt = mx.contiguous(w.reshape(nb * 16, 16).T)
            sw = seq_sum(wt, axis=0).reshape(nb, 16)
            scales, mins, Lt = qkx_search_t(xt, wt, 3, -0.9, 0.05, 36, False)
            d_val, ls, m_val, lm = _qp_scales_mins(scales, mins, sw, 15)
            sc_bytes = ls | (lm << 4)                                  # uint8 wrap like C
        d16, m16 = fp16_round(d_val), fp16_round(m_val)
        d = (d16[:, None] * (sc_bytes & 0xF).astype(mx.float32)).reshape(-1)  # (nb*16,)
        dm = (m16[:, None] * (sc_bytes >> 4).astype(mx.float32)).reshape(-1)
        Lt = _requantize(xt, d, dm, 3, Lt)
        L = Lt.T.reshape(nb, 2, 4, 32)                                # (nb, half, shift, 32)
        qs = (L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)).reshape(nb, 64)
        return mx.concatenate([sc_bytes, qs, fp16_bytes(d_val), fp16_bytes(m_val)], axis=1)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        sc = blocks[:, 0:16]
        d = fp16_from_bytes(blocks[:, 80:82])
        dmin = fp16_from_bytes(blocks[:, 82:84])
        dl = (d[:, None] * (sc & 0xF).astype(mx.float32))[:, :, None]   # (nb, 16, 1)
        ml = (dmin[:, None] * (sc >> 4).astype(mx.float32))[:, :, None]
        qs = blocks[:, 16:80].reshape(-1, 2, 1, 32)                    # (nb, half, 1, 32)
        q = ((qs >> _SHIFTS4) & 3).reshape(-1, 16, 16).astype(mx.float32)  # (nb, sub-block, 16)
        return (dl * q - ml).reshape(-1, QK_K)
