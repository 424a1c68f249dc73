"""The legacy 32-weight block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

NumPy twins of ggml's ``quantize_row_q*_ref`` (no importance matrix; each block on its own),
``quantize_row_q*_impl`` (with one; row by row, weights ``qw[j] * sqrt(sigma2 + x[j]^2)`` where
``sigma2`` is the row's mean square) and ``dequantize_row_q*`` (ggml-quants.c), byte for byte.

Block layouts (little-endian; ``q[j]`` is the code of weight ``j`` of the block)::

    Q4_0  18 B  | d:f16 | qs[16]                    |   x = (q - 8) * d
    Q4_1  20 B  | d:f16 | m:f16 | qs[16]            |   x = q * d + m
    Q5_0  22 B  | d:f16 | qh:u32 | qs[16]           |   x = (q - 16) * d
    Q5_1  24 B  | d:f16 | m:f16 | qh:u32 | qs[16]   |   x = q * d + m
    Q8_0  34 B  | d:f16 | qs[32]:int8               |   x = q * d

    qs[j]  bits 0-3: low nibble of q[j]   bits 4-7: low nibble of q[j+16]     (j < 16)
    qh     bit j: bit 4 of q[j]                                               (j < 32)

Float details that decide bytes, all taken from the C: ``id = 1/d`` then ``x*id`` (not ``x/d``);
codes are ``(int8_t)(v + 8.5f)`` etc., a truncation, then clamped; Q8_0 uses ``roundf`` (halves
away from zero), not ``nearest_int``; the max-|x| scan keeps the first index on ties and +0.0 for
an all-zero block; the row statistic ``sum_x2`` is a strict sequential float32 sum.

Speed: reductions over a block run as a tree of strided 1-D ufunc calls (long inner loops),
codes are packed eight at a time through uint64 views, and blocks are assembled in a structured
array. When ``d`` is a normal float (or 0) every code lies in range, so plain float clamps and
casts equal C's integer casts; blocks with a subnormal or infinite ``d`` take the exact path.
"""

from __future__ import annotations

import numpy as np

from ..codec import Codec
from ..buffers import output
from .numeric import F32, f16_field, field, ieee, inverse, put_field, seq_sum
from .search_scale import make_qx_quants
from .search_scale_min import make_qkx3_quants

U64 = np.uint64
QK = 32
FLT_MIN = F32(np.finfo(np.float32).tiny)
_LOW_NIBBLES = U64(0x0F0F0F0F0F0F0F0F)
_LOW_BITS = U64(0x0101010101010101)
_HALF_DOWN = np.nextafter(F32(0.5), F32(0.0))  # 0.49999997f

# One structured dtype per block layout; ``view(np.uint8)`` gives the GGUF bytes.
_F16 = "<f2"
_QS = ("qs", "u1", (16,))
_QH = ("qh", "u1", (4,))
BLOCK_LAYOUT = {
    "Q4_0": np.dtype([("d", _F16), _QS]),
    "Q4_1": np.dtype([("d", _F16), ("m", _F16), _QS]),
    "Q5_0": np.dtype([("d", _F16), _QH, _QS]),
    "Q5_1": np.dtype([("d", _F16), ("m", _F16), _QH, _QS]),
    "Q8_0": np.dtype([("d", _F16), ("qs", "i1", (32,))]),
}


# -- reductions over a block --------------------------------------------------------------------
def _tree(x: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    """(n, 32) -> (n,) by pairwise ``ufunc`` (exact for max/min up to the sign of zero)."""
    n = x.shape[0]
    flat = x.reshape(-1)
    m = ufunc(flat[0::2], flat[1::2])  # (n*16,)
    while m.size > n:
        m = ufunc(m[0::2], m[1::2])
    return m


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """ggml's ``if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`` from ``amax = max = 0``:
    the first value of largest magnitude, +0.0 for an all-zero block.

    On finite blocks this is :func:`~.numeric.first_absmax` (which also skips NaN); the tree over
    the 32 lanes is about ten times faster on these short rows.
    """
    mx, mn = _tree(x, np.maximum), _tree(x, np.minimum)  # (n,), (n,)
    sel = np.where(mx >= -mn, mx, mn) + F32(0.0)  # + 0 turns -0.0 into +0.0
    tie = np.flatnonzero((mx == -mn) & (mx != 0))  # +a and -a both present: first one wins
    if tie.size:
        xt = x[tie]  # (t, 32)
        sel[tie] = xt[np.arange(tie.size), np.argmax(np.abs(xt), axis=1)]
    return sel


def _first_min_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block min and max as ggml's ``if (v < min) min = v; if (v > max) max = v;`` finds them.

    Only a zero's sign can differ from a tree (C keeps the first zero seen, which decides the
    sign bit of ``m``), so blocks whose min or max is zero are redone with first-index argmin.
    """
    mn, mx = _tree(x, np.minimum), _tree(x, np.maximum)  # (n,), (n,)
    for v, arg in ((mn, np.argmin), (mx, np.argmax)):
        z = np.flatnonzero(v == 0)
        if z.size:
            xz = x[z]
            v[z] = xz[np.arange(z.size), arg(xz, axis=1)]
    return mn, mx


# -- float -> code conversions ------------------------------------------------------------------
def _per_block(a: np.ndarray) -> np.ndarray:
    """(n,) -> (n, 32) with every value repeated across its block (a new contiguous array;
    repeat + a flat in-place op is faster than a (n, 1) broadcast over rows of 32)."""
    return np.repeat(a, QK).reshape(-1, QK)


def _odd_scales(d: np.ndarray) -> np.ndarray:
    """Blocks whose ``d`` is subnormal or infinite: their codes may leave the usual range."""
    a = np.abs(d)
    return np.flatnonzero((d != 0) & ((a < FLT_MIN) | ~np.isfinite(a)))


def _c_int8(v: np.ndarray) -> np.ndarray:
    """C's ``(int8_t)v`` of a float as x86-64 compilers emit it: cvttss2si (NaN and out-of-range
    give INT_MIN), then the low byte."""
    with np.errstate(invalid="ignore"):
        return v.astype(np.int32).astype(np.int8)


def _codes(v: np.ndarray, top: int, clamp: bool, odd: np.ndarray) -> np.ndarray:
    """``MIN(top, (int8_t)v)`` (or ``(uint8_t)v`` without clamp) as uint8, v (n, 32) float32.

    Rows listed in ``odd`` are converted exactly. In the others (normal or zero ``d``) ``v`` lies
    within a few ulps of ``[0.5, top + 1.5]``, where truncating to uint8 is C's cast and gives
    at most ``top + 1`` (a power of two): the clamp is ``q -= q >> log2(top + 1)`` on the bytes
    (NumPy's minimum with a scalar is not vectorized for uint8).
    """
    exact = None
    if odd.size:
        c = _c_int8(v[odd])
        exact = (np.minimum(c, np.int8(top)) if clamp else c).view(np.uint8)
    q = v.astype(np.uint8)  # (n, 32) truncation
    if clamp:
        np.subtract(q, q >> np.uint8(int(top + 1).bit_length() - 1), out=q)
    if exact is not None:
        q[odd] = exact
    return q


def _roundf_i8(v: np.ndarray, odd: np.ndarray) -> np.ndarray:
    """``(int8_t)roundf(v)``, v (n, 32) float32 (modified in place).

    Fast path: ``v + copysign(0.49999997f, v)`` truncated equals ``roundf`` for every float
    with ``|v| <= 128.5`` (checked exhaustively; 0.5 itself would send 0.49999997 to 1).
    Rows in ``odd`` (``|v|`` may pass 127.5, or be NaN) go through rint with the halves moved
    away from zero, then C's int8 wrap.
    """
    exact = None
    if odd.size:
        vo = v[odd]
        r = np.rint(vo)
        half = np.abs(vo - r) == F32(0.5)
        r[half] = np.trunc(vo[half]) + np.sign(vo[half])
        exact = _c_int8(r)
    s = v.view(np.uint32) & np.uint32(0x80000000)  # sign bits (np.copysign is 3x slower)
    s |= _HALF_DOWN.view(np.uint32)
    v += s.view(F32)
    q = v.astype(np.int8)  # truncation
    if exact is not None:
        q[odd] = exact
    return q


# -- packing ------------------------------------------------------------------------------------
def pack_qs(q: np.ndarray) -> np.ndarray:
    """(n, 32) uint8 codes -> (n, 16) uint8 ``q[j] & 15 | (q[j+16] & 15) << 4``, 8 at a time."""
    q64 = np.ascontiguousarray(q).view(U64)  # (n, 4): bytes 0-7, 8-15, 16-23, 24-31
    out = np.empty((q.shape[0], 2), U64)
    for k in (0, 1):
        hi = np.bitwise_and(q64[:, k + 2], _LOW_NIBBLES)
        np.left_shift(hi, U64(4), out=out[:, k])
        out[:, k] |= q64[:, k] & _LOW_NIBBLES
    return out.view(np.uint8)


def unpack_qs(qs: np.ndarray) -> np.ndarray:
    """(n, 16) packed bytes -> (n, 32) uint8 low 4 bits of every code."""
    p = np.ascontiguousarray(qs).view(U64)  # (n, 2)
    n = p.shape[0]
    out = np.empty((n, 2), "V16")  # low nibbles, then high ones; each half one 16-byte element
    lo = p & _LOW_NIBBLES
    out[:, 0] = lo.view("V16").reshape(n)
    np.right_shift(p, U64(4), out=lo)
    lo &= _LOW_NIBBLES
    out[:, 1] = lo.view("V16").reshape(n)
    return out.view(np.uint8).reshape(n, QK)


def pack_qh(q: np.ndarray) -> np.ndarray:
    """(n, 32) codes -> (n, 4) uint8: bit j of the little-endian u32 is bit 4 of q[j]."""
    bits = (np.ascontiguousarray(q).view(U64) >> U64(4)) & _LOW_BITS  # bytes of 0/1
    return np.packbits(bits.view(np.uint8).reshape(-1), bitorder="little").reshape(-1, 4)


def unpack_qh(qh: np.ndarray) -> np.ndarray:
    """(n, 4) uint8 -> (n, 32) uint8 holding the fifth bit (0 or 16) of every code.

    Each qh byte is spread over the 8 bytes of a uint64 (``* 0x0101..01``, one bit kept per
    byte); adding 0x7f to a byte sets its top bit exactly when the byte is non-zero.
    """
    y = np.ascontiguousarray(qh).astype(U64)  # (n, 4)
    y *= U64(0x0101010101010101)
    y &= U64(0x8040201008040201)
    y += U64(0x7F7F7F7F7F7F7F7F)  # no carry between bytes: each byte is at most 0x80
    y >>= U64(3)
    y &= U64(0x1010101010101010)
    return y.view(np.uint8).reshape(-1, QK)


_M_AT = {"Q4_1": 2, "Q5_1": 2}  # byte offset of the fp16 min
_QH_AT = {"Q5_0": 2, "Q5_1": 4}


def _assemble(qtype: str, d: np.ndarray, q: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
    """d (n,) f32, codes q (n, 32) uint8 (0..31), m (n,) f32 or None -> (n, type_size) uint8,
    written into the caller's output buffer when it offers one (:func:`~.numeric.output`)."""
    dt = BLOCK_LAYOUT[qtype]
    n = q.shape[0]
    out = output((n, dt.itemsize), np.uint8)
    rec = out.view(dt).reshape(n)
    rec["d"] = d  # float32 -> float16, round to nearest even as GGML_FP32_TO_FP16
    if m is not None:
        rec["m"] = m
    if qtype in _QH_AT:
        put_field(out, _QH_AT[qtype], pack_qh(q))
    put_field(out, dt.itemsize - 16, pack_qs(q))
    return out


def _decode(blocks: np.ndarray, size: int, offset: int) -> np.ndarray:
    """dequantize_row_q{4,5}_{0,1}: (n, size) uint8 blocks -> (n, 32) float32.

    ``_0`` types (``offset`` 8 or 16): ``(q - offset) * d``. ``_1`` types (``offset`` 0, a min
    ``m`` after ``d``): ``q * d + m``, two roundings as in C without FMA. ``q * d`` is exact
    either way (at most 8 significant bits times fp16's 11). Codes are unpacked with 64-bit
    word operations, and the one float pass per weight writes the caller's output buffer.
    """
    b = np.ascontiguousarray(blocks)
    n = b.shape[0]
    d = f16_field(b, 0)[:, None]  # (n, 1)
    m = None if offset else f16_field(b, 2)[:, None]
    p = 2 if offset else 4  # start of qh (5-bit types) or qs
    q = unpack_qs(field(b, size - 16, size))  # (n, 32) 0..15
    if size - p > 16:  # qh present
        q |= unpack_qh(field(b, p, p + 4))
    out = output((n, QK), F32)
    if offset:
        qi = q.view(np.int8)
        qi -= np.int8(offset)
        return np.multiply(qi, d, out=out)
    np.multiply(q, d, out=out)
    out += m
    return out


# -- quantizers shared by the pairs of types ----------------------------------------------------
def _encode_symmetric(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """quantize_row_q4_0_ref (nmax 8) / q5_0_ref (nmax 16): x (n, 32) -> d (n,), q (n, 32) u8."""
    d = _signed_absmax(x) / F32(-nmax)  # (n,)
    v = _per_block(inverse(d))  # (n, 32) id
    v *= x  # x*id
    v += F32(nmax + 0.5)
    return d, _codes(v, 2 * nmax - 1, True, _odd_scales(d))


def _encode_asymmetric(x: np.ndarray, nmax: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """quantize_row_q4_1_ref (nmax 15, clamped) / q5_1_ref (nmax 31): -> d, min (n,), q (n, 32)."""
    mn, mx = _first_min_max(x)  # (n,), (n,)
    d = (mx - mn) / F32(nmax)
    v = _per_block(-mn)  # (n, 32)
    v += x  # x - min (a - b is a + (-b) exactly)
    v *= _per_block(inverse(d))
    v += F32(0.5)
    return d, mn, _codes(v, nmax, clamp, _odd_scales(d))


def _row_weights(x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
    """``qw[j] * sqrtf(sigma2 + x[j]*x[j])`` with ``sigma2 = sum_x2 / n_per_row``, as blocks.

    x (rows, cols) f32 -> (rows * cols / 32, 32) f32. ``sum_x2`` adds ``x[j]*x[j]`` left to
    right in float32 (:func:`~.numeric.seq_sum`).
    """
    x2 = x * x  # (rows, cols)
    sigma2 = seq_sum(x2, axis=1) / F32(x.shape[1])  # (rows,)
    x2 += sigma2[:, None]
    w = np.sqrt(x2, out=x2)
    w *= imatrix[None, :]
    return w.reshape(-1, QK)


_RMIN, _RDELTA, _NSTEP = F32(-0.9), F32(0.05), 36  # make_qkx3_quants(..., -0.9f, 0.05f, 36, false)


# -- the codecs ---------------------------------------------------------------------------------
class Q4_0(Codec, qtype="Q4_0"):
    @classmethod
    @ieee
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        d, q = _encode_symmetric(x, 8)
        return _assemble("Q4_0", d, q)  # (n, 18)

    @classmethod
    @ieee
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        return _decode(blocks, 18, 8)

    @classmethod
    @ieee
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        d, q = make_qx_quants(x.reshape(-1, QK), 8, 1, _row_weights(x, imatrix))  # q = 8 + l
        return _assemble("Q4_0", d, q).reshape(x.shape[0], -1)


class Q5_0(Codec, qtype="Q5_0"):
    @classmethod
    @ieee
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        d, q = _encode_symmetric(x, 16)
        return _assemble("Q5_0", d, q)  # (n, 22)

    @classmethod
    @ieee
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        return _decode(blocks, 22, 16)

    @classmethod
    @ieee
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        d, q = make_qx_quants(x.reshape(-1, QK), 16, 1, _row_weights(x, imatrix))  # q = 16 + l
        return _assemble("Q5_0", d, q).reshape(x.shape[0], -1)


class Q4_1(Codec, qtype="Q4_1"):
    @classmethod
    @ieee
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        d, mn, q = _encode_asymmetric(x, 15, clamp=True)
        return _assemble("Q4_1", d, q, mn)  # (n, 20)

    @classmethod
    @ieee
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        return _decode(blocks, 20, 0)

    @classmethod
    @ieee
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        w = _row_weights(x, imatrix)
        d, the_min, q = make_qkx3_quants(x.reshape(-1, QK), w, 15, _RMIN, _RDELTA, _NSTEP, False)
        return _assemble("Q4_1", d, q, -the_min).reshape(x.shape[0], -1)


class Q5_1(Codec, qtype="Q5_1"):
    @classmethod
    @ieee
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        d, mn, q = _encode_asymmetric(x, 31, clamp=False)
        return _assemble("Q5_1", d, q, mn)  # (n, 24)

    @classmethod
    @ieee
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        return _decode(blocks, 24, 0)

    @classmethod
    @ieee
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        w = _row_weights(x, imatrix)
        d, the_min, q = make_qkx3_quants(x.reshape(-1, QK), w, 31, _RMIN, _RDELTA, _NSTEP, False)
        return _assemble("Q5_1", d, q, -the_min).reshape(x.shape[0], -1)


class Q8_0(Codec, qtype="Q8_0"):
    """Q8_0 ignores an importance matrix (ggml's ``quantize_q8_0`` does too)."""

    @classmethod
    @ieee
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        amax = np.maximum(_tree(x, np.maximum), -_tree(x, np.minimum)) + F32(0.0)  # (n,) >= +0
        d = amax / F32(127)
        v = _per_block(inverse(d))
        v *= x  # (n, 32) x*id, in [-127, 127] for a normal d
        out = output((x.shape[0], 34), np.uint8)
        out.view(BLOCK_LAYOUT["Q8_0"]).reshape(-1)["d"] = d
        put_field(out, 2, _roundf_i8(v, _odd_scales(d)).view(np.uint8))
        return out

    @classmethod
    @ieee
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(blocks)
        d = f16_field(b, 0)[:, None]  # (n, 1)
        q = field(b, 2, 34).view(np.int8)  # (n, 32)
        return np.multiply(q, d, out=output(q.shape, F32))
