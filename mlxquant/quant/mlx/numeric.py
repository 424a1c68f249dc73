"""Float32 arithmetic that follows ggml's C code exactly, on MLX arrays (twin of
``mlxquant/quant/numpy/numeric.py``, same names, same bits).

MLX reductions (``mx.sum``) have no specified order, so every ggml accumulation ``s = 0;
s += a[i]`` is a chain of elementwise adds; the first largest ``|x|`` is found with
order-independent ``max``/``min`` reductions, never with ``argmax`` tie rules. Two MLX rules
differ from ggml's and are corrected here: ``astype(float16)`` writes NaN as ``sign | 0x7D00``
(ggml: ``sign | 0x7E00``), and a float -> int cast of NaN or an out-of-range value is
backend-specific (x86-64's ``cvttss2si``: INT_MIN).
"""

from __future__ import annotations

import mlx.core as mx

F32 = mx.float32
GROUP_MAX_EPS = 1e-15  # ggml's GROUP_MAX_EPS (as float32 when compared with a float32 array)
_MAGIC = 12582912.0  # 1.5 * 2**23, exact in float32
_INT_MIN = -2147483648


# -- sums ----------------------------------------------------------------------------------------
def seq_sum(a: mx.array, axis: int = -1) -> mx.array:
    """Sum over ``axis`` in strict sequential float32 order from +0.0: C's ``s = 0; s += a[i]``,
    one elementwise add per position. Starting from +0.0 makes an all -0.0 sum +0.0."""
    if axis % a.ndim:
        a = mx.moveaxis(a, axis, 0)
    acc = a[0] + 0.0
    for i in range(1, a.shape[0]):
        acc = acc + a[i]
    return acc


# -- rounding and conversions --------------------------------------------------------------------
def nearest_int_c(v: mx.array) -> mx.array:
    """ggml's ``nearest_int`` bit for bit, for any float32 input (int32 result).

    ``(bits(v + 12582912.f) & 0x7fffff) - 0x400000``: round half to even for ``|v| <= 4194303``;
    outside that range (and for inf/NaN) the result wraps exactly as the C code computes it.
    """
    bits = (v.astype(F32) + _MAGIC).view(mx.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def inverse(d: mx.array) -> mx.array:
    """``id = d ? 1.0f/d : 0.0f``."""
    return mx.where(d != 0, mx.array(1.0, F32) / d, mx.array(0.0, F32))


def c_int32(v: mx.array) -> mx.array:
    """C's float -> int conversion as x86-64 compilers emit it (``cvttss2si``): truncation toward
    zero, INT_MIN for NaN and out-of-range values. float32 -> int32."""
    ok = (v >= -2147483648.0) & (v < 2147483648.0)  # False for NaN
    # Where ``ok`` is False the cast's own result (backend-specific) is replaced.
    return mx.where(ok, v.astype(mx.int32), mx.array(_INT_MIN, mx.int32))


# -- scans ---------------------------------------------------------------------------------------
def abs_max(x: mx.array) -> mx.array:
    """``amax = MAX(amax, fabsf(v))`` from 0 over the last axis: +0.0 for an all-zero row."""
    return mx.max(mx.abs(x), axis=-1)


def first_index(hit: mx.array, axis: int) -> mx.array:
    """Index of the first True along ``axis`` (``size`` when none), without argmax tie rules."""
    n = hit.shape[axis]
    shape = [1] * hit.ndim
    shape[axis] = n
    pos = mx.arange(n, dtype=mx.int32).reshape(shape)
    return mx.min(mx.where(hit, pos, n), axis=axis)


def first_absmax(a: mx.array, axis: int = 0) -> tuple[mx.array, mx.array]:
    """Largest ``|a|`` along ``axis`` and the signed ``a`` where it first occurs, as C's
    ``if (fabsf(v) > amax) { amax = fabsf(v); max = v; }`` scan from ``amax = max = 0`` finds them:
    a NaN never wins, and a slice with nothing above 0 gives (+0.0, +0.0)."""
    ax = mx.abs(a)
    ax = mx.where(mx.isnan(ax), -1.0, ax)
    amax = mx.maximum(mx.max(ax, axis=axis, keepdims=True), 0.0)
    idx = first_index((ax == amax) & (ax > 0), axis)
    amax = amax.squeeze(axis)
    idx = mx.minimum(idx, a.shape[axis] - 1)
    m = mx.take_along_axis(a, mx.expand_dims(idx, axis), axis=axis).squeeze(axis)
    return amax, mx.where(amax > 0, m, 0.0)


# -- float16 and packing -------------------------------------------------------------------------
def fp16_bits(x: mx.array) -> mx.array:
    """float32 -> uint16 float16 bits as ggml's ``GGML_FP32_TO_FP16`` writes them.

    Round to nearest even with overflow to inf (MLX's cast), except NaN: ggml writes every NaN
    as ``sign | 0x7E00`` (``ggml_compute_fp32_to_fp16``), while MLX's cast writes ``sign | 0x7D00``,
    which reads back as a NaN with another payload and so changes ``nearest_int`` of later NaN
    arithmetic (the re-coding against ``d*sc`` on overflowing inputs). The sign of a NaN made by
    ``0 * inf`` is the hardware's: set on x86-64 (ggml's reference), clear on ARM.
    """
    x = x.astype(F32)
    h = x.astype(mx.float16).view(mx.uint16)
    ggml_nan = ((x.view(mx.uint32) >> 16) & 0x8000).astype(mx.uint16) | 0x7E00
    return mx.where(mx.isnan(x), ggml_nan, h)


def fp16_round(x: mx.array) -> mx.array:
    """float32 -> float16 (ggml's GGML_FP32_TO_FP16 rounding, NaN included) -> float32."""
    return fp16_bits(x).view(mx.float16).astype(F32)


def fp16_bytes(x: mx.array) -> mx.array:
    """float32 (n,) -> (n, 2) uint8, little-endian float16 (ggml's GGML_FP32_TO_FP16)."""
    return fp16_bits(x).reshape(-1, 1).view(mx.uint8)


def fp16_from_bytes(b: mx.array) -> mx.array:
    """(n, 2) uint8 little-endian float16 -> (n,) float32."""
    return mx.contiguous(b).reshape(-1).view(mx.float16).astype(F32)


def pack_nibbles(lo: mx.array, hi: mx.array) -> mx.array:
    """Two arrays of 4-bit codes -> bytes ``lo | hi << 4`` (uint8)."""
    return (lo.astype(mx.uint8) & 0x0F) | ((hi.astype(mx.uint8) & 0x0F) << 4)


def pack_halves(codes: mx.array) -> mx.array:
    """(..., k) 4-bit codes -> (..., k/2) bytes: code j in the low nibble, j + k/2 in the high one."""
    h = codes.shape[-1] // 2
    return pack_nibbles(codes[..., :h], codes[..., h:])
