"""Float32 arithmetic that follows ggml's C code exactly, shared by the NumPy codecs.

ggml accumulates in float32, one element after another; NumPy's ``sum`` is pairwise and gives
different low bits. Everything here keeps ggml's order and its IEEE corner cases (overflow to inf,
NaN from ``0 * inf``) so that codecs can be byte-identical. The MLX twins are in
:mod:`mlxquant.quant.mlx.numeric`.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)  # ggml's GROUP_MAX_EPS: groups with max |x| below it are all-zero
_MAGIC = F32(12582912.0)  # 1.5 * 2**23


def ieee(fn: Callable) -> Callable:
    """Run ``fn`` with NumPy's float warnings off: overflow to inf, ``0 * inf = NaN`` and the like
    are part of ggml's arithmetic on extreme inputs (C neither traps nor warns), not errors."""

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return quiet


# -- sums ----------------------------------------------------------------------------------------
def seq_sum(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum over ``axis`` in strict sequential float32 order from +0.0: C's ``s = 0; s += a[i]``.

    Over a non-last axis of a C-contiguous array whose last axis has length >= 2,
    ``np.add.reduce`` adds whole slices one after the other (the reduced axis is an outer loop),
    which is that order; with a last axis of length 1 NumPy would switch to pairwise summation.
    Over the last axis ``np.add.accumulate`` runs the recurrence itself. Starting from +0.0 makes
    an all -0.0 sum +0.0, as C's accumulator does.
    """
    a = np.asarray(a, dtype=F32)
    axis = axis % a.ndim
    if a.shape[axis] == 0:
        return np.zeros(a.shape[:axis] + a.shape[axis + 1 :], dtype=F32)
    if axis == a.ndim - 1:
        return np.add.accumulate(a, axis=-1)[..., -1] + F32(0.0)
    if a.shape[-1] >= 2 and a.flags.c_contiguous:
        return np.add.reduce(a, axis=axis, initial=F32(0.0))
    slices = np.moveaxis(a, axis, 0)
    acc = slices[0] + F32(0.0)
    for s in slices[1:]:
        acc += s
    return acc


def seq_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``s = 0; s += a[i]*b[i]`` over the last axis, float32, no fused multiply-add."""
    return seq_sum(np.multiply(a, b, dtype=F32))


# -- rounding ------------------------------------------------------------------------------------
def nearest_int(x: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int`` where ``|x| < 2**22``: round half to even, as int32 (for inputs that
    may leave that range, or be NaN, use :func:`nearest_int_c`)."""
    return np.rint(x).astype(np.int32)


def nearest_int_c(v: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int`` bit for bit, for any float32 input (int32 result).

    ``(bits(v + 12582912.f) & 0x7fffff) - 0x400000``: round half to even for ``|v| <= 4194303``;
    ggml asserts that range only in debug builds, so larger inputs wrap exactly as in C, a NaN
    (x86's default NaN) gives 0 and ±inf give -2**22, which the callers' clamps then bound.
    """
    bits = (np.asarray(v, dtype=F32) + _MAGIC).view(np.int32)
    return (bits & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def inverse(d: np.ndarray) -> np.ndarray:
    """``id = d ? 1.0f/d : 0.0f`` on a float32 array (inf where ``1/d`` overflows)."""
    out = np.zeros_like(d)
    np.divide(F32(1.0), d, out=out, where=d != 0)
    return out


# -- scans ---------------------------------------------------------------------------------------
def abs_max(x: np.ndarray) -> np.ndarray:
    """``amax = MAX(amax, fabsf(v))`` from 0 over the last axis of a *finite* float32 array.

    The sign bit is cleared and the largest pattern taken as an unsigned integer (one pass, no
    float compare); +0.0 for an all-zero row.
    """
    u = x.view(np.uint32) & np.uint32(0x7FFFFFFF)
    return u.max(axis=-1).view(F32)


def first_absmax(a: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``|a|`` along ``axis`` and the signed ``a`` where it first occurs, as C's
    ``if (fabsf(v) > amax) { amax = fabsf(v); max = v; }`` scan from ``amax = max = 0`` finds them:
    a NaN never wins, and a slice with nothing above 0 gives (+0.0, +0.0).

    Position-major ``(k, n)`` arrays with many groups (``axis=0``, ``n >= 1024``) are scanned
    position by position (:func:`_first_absmax_scan`); elsewhere ``argmax`` (which keeps the first
    index) is faster. Both give the same bits.
    """
    if axis % a.ndim == 0 and a[0].size >= 1024:
        return _first_absmax_scan(a)
    ax = np.fmax(np.abs(a), F32(-1))  # NaN -> -1: never the largest
    idx = np.expand_dims(np.argmax(ax, axis=axis), axis)
    amax = np.take_along_axis(ax, idx, axis).squeeze(axis)
    m = np.take_along_axis(a, idx, axis).squeeze(axis)
    pos = amax > 0
    return np.where(pos, amax, F32(0)), np.where(pos, m, F32(0))


def _first_absmax_scan(xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`first_absmax` over axis 0 of (k, n): the C scan emulated by selecting from the last
    position back to the first, k vector steps over n."""
    ax = np.abs(xt)
    amax = np.fmax(np.fmax.reduce(ax, axis=0), F32(0))  # fmax skips NaN, like the C compare
    mx = xt[-1].copy()
    for i in range(xt.shape[0] - 2, -1, -1):
        blend(mx, xt[i], mask32(ax[i] == amax))
    mx[amax == 0] = 0  # nothing beat the initial 0
    return amax, mx


# -- selects -------------------------------------------------------------------------------------
def mask32(m: np.ndarray) -> np.ndarray:
    """bool mask -> int32 0 / -1 (all bits set), for :func:`blend`."""
    mi = m.astype(np.int32)
    np.negative(mi, out=mi)
    return mi


def blend(dst: np.ndarray, src: np.ndarray, mi: np.ndarray) -> None:
    """In place ``dst = mi ? src : dst`` on float32 bit patterns (mi from :func:`mask32`).

    Exact, and several times faster than ``np.where``/``np.copyto(where=)`` on random masks.
    """
    d = dst.view(np.int32)
    t = np.bitwise_xor(np.asarray(src, dtype=F32).view(np.int32), d)
    t &= mi
    d ^= t


# -- byte fields of packed blocks -------------------------------------------------------------------
def _field_dtype(start: int, stop: int, size: int) -> np.dtype:
    return np.dtype({"names": ["f"], "formats": [f"V{stop - start}"], "offsets": [start], "itemsize": size})


def field(blocks: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bytes ``start:stop`` of every row of ``(n, size)`` uint8 blocks, as a new contiguous
    ``(n, stop - start)`` uint8 array.

    The rows are copied as single ``V<k>`` elements: one long inner loop, several times faster
    than NumPy's 2-D byte copy (which runs an inner loop of ``k`` bytes per row).
    """
    b = np.ascontiguousarray(blocks)
    n, size = b.shape
    src = b.view(_field_dtype(start, stop, size)).reshape(n)["f"]
    return np.ascontiguousarray(src).view(np.uint8).reshape(n, stop - start)


def put_field(blocks: np.ndarray, start: int, data: np.ndarray) -> None:
    """``blocks[:, start:start + k] = data`` for C-contiguous (n, size) uint8 ``blocks`` and
    (n, k) uint8 ``data``, copied as one ``V<k>`` element per row (see :func:`field`)."""
    n, size = blocks.shape
    k = data.shape[-1]
    dst = blocks.view(_field_dtype(start, start + k, size)).reshape(n)["f"]
    dst[...] = np.ascontiguousarray(data, dtype=np.uint8).view(f"V{k}").reshape(n)


def f16_field(blocks: np.ndarray, start: int) -> np.ndarray:
    """The little-endian float16 at byte ``start`` of every row of (n, size) uint8 blocks, as
    float32 (n,)."""
    b = np.ascontiguousarray(blocks)
    n, size = b.shape
    dt = np.dtype({"names": ["f"], "formats": ["<f2"], "offsets": [start], "itemsize": size})
    return b.view(dt).reshape(n)["f"].astype(F32)


_SIGN32 = np.uint32(0x80000000)
_F16_SCALE = F32(2.0**112)
_F16_INF = np.uint32(0x0F800000)  # float16 exponent 31, after the shift below


def f16_to_f32(h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float16 bit patterns (uint16, any shape) -> float32 as ggml's ``GGML_FP16_TO_FP32``
    converts them: exact, and a NaN comes back quiet (ggml's generic conversion multiplies it,
    which sets the quiet bit; ``astype`` keeps a signalling NaN signalling).

    About twice as fast as ``astype``: the 15 magnitude bits shifted into a float32 are the
    value times 2**-112 (normal and subnormal halves alike), so one exact multiply rescales
    them. Arrays holding an inf or NaN (exponent 31) take ``astype`` and a fix-up.
    """
    h = np.asarray(h)
    a = np.empty(h.shape, np.uint32) if out is None else out.view(np.uint32)
    np.left_shift(h, 16, out=a, dtype=np.uint32)  # sign at bit 31, magnitude at bits 16-30
    s = a & _SIGN32
    a ^= s
    a >>= 3
    f = a.view(F32)
    if a.size and a.max() >= _F16_INF:
        f[...] = h.view(np.float16).astype(F32)
        a[np.isnan(f)] |= np.uint32(0x00400000)
        return f
    f *= _F16_SCALE
    a |= s
    return f


# -- bit planes for decoders -------------------------------------------------------------------------
_U64 = np.uint64


def bit_planes(words: np.ndarray, shifts, mask: int) -> np.ndarray:
    """``(words >> s) & mask`` for every shift ``s``: (k,) + words.shape uint64 (one long inner
    loop per shift, whatever the shape of ``words``)."""
    sh = np.asarray(shifts, dtype=_U64).reshape((-1,) + (1,) * words.ndim)
    t = np.right_shift(words[None], sh)
    t &= _U64(mask)
    return t


def interleave(planes: np.ndarray, dst: np.ndarray, axes: tuple[int, ...]) -> None:
    """Copy ``planes`` into ``dst`` with its axes reordered (``np.transpose(planes, axes)``),
    moving whole trailing rows of ``planes`` (their last axis, uint64 words) as single
    ``V<8k>`` elements: an interleave of byte groups without a per-byte loop.

    ``dst`` is a uint8 or uint64 array with a contiguous last axis (a column slice is fine)
    whose shape, in ``V`` units, is the transposed shape of ``planes`` without its last axis
    (or reshapes to it).
    """
    k = planes.shape[-1]
    v = f"V{8 * k}"
    src = np.ascontiguousarray(planes).view(v)[..., 0].transpose(axes)
    d = dst.view(v)
    if d.shape != src.shape:
        d = d.reshape(src.shape)
    d[...] = src


def split_nibbles(qs: np.ndarray) -> np.ndarray:
    """(m, h) packed bytes, h a multiple of 8 -> (m, 2h) uint8: the low nibbles of a row, then
    its high nibbles (the layout of Q4_0, IQ4_NL, MXFP4, ...), 8 bytes per word operation."""
    m, h = qs.shape
    p = np.ascontiguousarray(qs, dtype=np.uint8).view(_U64)             # (m, h/8)
    out = np.empty((m, 2 * h), np.uint8)
    interleave(bit_planes(p, (0, 4), 0x0F0F0F0F0F0F0F0F), out, (1, 0))
    return out


# -- float16 and packing -------------------------------------------------------------------------
def fp16_round(x: np.ndarray) -> np.ndarray:
    """Round float32 to float16 as ggml's GGML_FP32_TO_FP16 does and back to float32."""
    return np.asarray(x, dtype=F32).astype(np.float16).astype(F32)


def fp16_bytes(x: np.ndarray) -> np.ndarray:
    """float32 (n,) -> (n, 2) uint8, little-endian float16."""
    return np.asarray(x, dtype=F32).astype("<f2").view(np.uint8).reshape(-1, 2)


def fp16_from_bytes(b: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 little-endian float16 -> (n,) float32."""
    return np.ascontiguousarray(b).view("<f2").reshape(-1).astype(F32)


def pack_nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two arrays of 4-bit codes -> bytes ``lo | hi << 4`` (uint8)."""
    return (lo.astype(np.uint8, copy=False) & 0x0F) | ((hi.astype(np.uint8, copy=False) & 0x0F) << 4)


def pack_halves(codes: np.ndarray) -> np.ndarray:
    """(..., k) 4-bit codes -> (..., k/2) bytes: code j in the low nibble, j + k/2 in the high one."""
    h = codes.shape[-1] // 2
    return pack_nibbles(codes[..., :h], codes[..., h:])
