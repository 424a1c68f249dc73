"""The compiled fused kernel: ``Y = X @ W.T`` with ``W`` still in its GGUF blocks.

``W`` is the tensor's bytes as uint8 rows (``(rows, row_bytes)``, e.g. a slice of the memory-mapped
file), ``X`` float32 ``(T, cols)`` with few rows (decoding). For every type with a row dot product
in vector IR (:mod:`.vdots`: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K..Q6_K,
IQ4_XS) or a block dot product (:mod:`.dots`, :mod:`.kdots`: MXFP4, TQ1_0, TQ2_0) there is one
compiled ``fused_<type>(W, X, Y, chunk, n16)`` (cached on disk like the codecs; :func:`kernel_for`
finds it; the i-quant grids IQ1_S ... IQ3_S and NVFP4, which have no dot product here, decode
each row with their codec into a row buffer and dot that, :func:`_decoded`): each output row walks its blocks once per row of ``X``, the block's codes unpacked in
registers and multiplied into float32 sums (the scale applied once per sub-block; the vector-IR
rows keep their sums in vector registers across the whole row). The sums of ``X`` per 16
columns, needed by the types with a min or a code offset, are taken once per call. Rows are split
over Numba's threads in chunks of ``chunk`` rows (``prange``), so each core streams its own part
of the matrix.

``n16`` is always 16, passed at run time on purpose: with a constant trip count LLVM unrolled the
16/32-weight loops of some types completely and then vectorized the loop over *blocks* (strided
loads, shuffles: Q8_0 ran at 0.6 instead of 3.5 Gweights/s here); a run-time count keeps the
vectorizer on the loop over a block's weights (the block dot products; the vector-IR rows ignore it).
``fastmath`` allows only ``reassoc`` (so LLVM vectorizes the sums, as BLAS does), ``contract``
(FMA) and ``nsz``: no finite-math or reciprocal assumptions, so NaN and inf in the weights or
activations propagate as in a float32 product.

On a CPU with AVX-512 VNNI, the K-quants, IQ4_XS, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and MXFP4 run
``fused_<type>_int`` instead (the names ``Q4_K_KERNEL`` etc. say which is in use): the row dots
of :mod:`.idots` on integer dot products, the activations split exactly into three bytes once per
call; activations the split cannot hold
(NaN, inf, magnitudes past 2^60) take the float kernel.

Numba's disk cache of a ``fused_<type>`` is keyed on this file only: after editing :mod:`.dots`,
:mod:`.kdots`, :mod:`.vdots`, :mod:`.idots`, :mod:`.vir` or :mod:`.layout`, delete
``__pycache__/fused.*`` (or touch this file), else the old compiled kernels are loaded.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numba import njit, prange

from ...quant.jit import fp4, iq1, iq2, iq2s, iq3
from . import dots as ld
from . import idots as idt
from . import kdots as kd
from . import vdots as vd

F32 = np.float32
FASTMATH = {"reassoc", "contract", "nsz"}
OPTS = dict(parallel=True, nogil=True, cache=True, boundscheck=False, error_model="numpy",
            fastmath=FASTMATH)


class Kernel(NamedTuple):
    """The compiled kernel of one type: ``block`` weights in ``block_bytes`` bytes."""

    block: int
    block_bytes: int
    fused: Callable[..., None]


@njit(inline="always")
def _x_sums(X, sums):
    """The sums of ``X`` per 16 columns ``(T, cols // 16)``, for the types with a min or a code
    offset (``sums``; else an empty ``(T, 0)``)."""
    T, cols = X.shape
    XS = np.empty((T, cols // 16 if sums else 0), F32)
    if sums:
        for t in range(T):
            for i in range(cols // 16):
                s = F32(0)
                for j in range(16):
                    s += X[t, 16 * i + j]
                XS[t, i] = s
    return XS


@njit(inline="always")
def _fused(dot, bs, tsize, W, X, Y, chunk, n16):
    """The kernel's body for a type with a block dot product (:mod:`.dots`, :mod:`.kdots`;
    inlined into one compiled function per type, below): blocks of ``bs`` weights in ``tsize``
    bytes, one ``dot`` call each (none of these types uses the sums of ``X``)."""
    rows = W.shape[0]
    T = X.shape[0]
    nb = X.shape[1] // bs
    XS = _x_sums(X, False)
    nch = (rows + chunk - 1) // chunk
    for c in prange(nch):
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            w = W[r]
            for t in range(T):
                x = X[t]
                xs = XS[t]
                acc = F32(0)
                for b in range(nb):
                    acc += dot(w, b * tsize, x, b * bs, xs, b * (bs // 16), n16)
                Y[t, r] = acc


@njit(inline="always")
def _decoded(decode, W, X, Y, chunk):
    """The kernel's body for a type without a dot product here (the i-quant grids, NVFP4; one
    compiled function per type, below): each row decoded by the type's compiled codec
    (:mod:`mlxquant.quant.jit`, ``decode(data, out)``) into one row of floats per chunk, then
    dotted with every row of ``X``. The values :func:`~mlxquant.quant.dequantize` gives, never
    more than a row of them at a time."""
    rows = W.shape[0]
    T = X.shape[0]
    cols = X.shape[1]
    nch = (rows + chunk - 1) // chunk
    for c in prange(nch):
        buf = np.empty((1, cols), F32)
        row = buf[0]
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            decode(W[r:r + 1], buf)
            for t in range(T):
                x = X[t]
                acc = F32(0)
                for j in range(cols):
                    acc += row[j] * x[j]
                Y[t, r] = acc


@njit(inline="always")
def _rows(rowdot, W, X, XS, Y, r0, chunk, nb):
    """Rows ``r0 .. r0 + chunk`` of one matrix (in :func:`_fused_rows3`, one inlined copy per
    matrix: choosing the matrix by assignment inside the loop ran the Q5_0 rows 1.3x slower)."""
    for r in range(r0, min(W.shape[0], r0 + chunk)):
        w = W[r]
        for t in range(X.shape[0]):
            Y[t, r] = rowdot(w, X[t], XS[t], nb)


@njit(inline="always")
def _prange_rows(rowdot, W, X, XS, Y, chunk, nb):
    """``Y[t, r] = rowdot(W[r], X[t], XS[t], nb)`` for every row, split over the threads in chunks."""
    for c in prange((W.shape[0] + chunk - 1) // chunk):
        _rows(rowdot, W, X, XS, Y, c * chunk, chunk, nb)


@njit(inline="always")
def _prange_rows3(rowdot, W0, W1, W2, X, XS, Y0, Y1, Y2, chunk, nb):
    """:func:`_prange_rows` for three matrices sharing ``X``: their row chunks in one ``prange``."""
    n0 = (W0.shape[0] + chunk - 1) // chunk
    n1 = (W1.shape[0] + chunk - 1) // chunk
    n2 = (W2.shape[0] + chunk - 1) // chunk
    for c in prange(n0 + n1 + n2):
        if c < n0:
            _rows(rowdot, W0, X, XS, Y0, c * chunk, chunk, nb)
        elif c < n0 + n1:
            _rows(rowdot, W1, X, XS, Y1, (c - n0) * chunk, chunk, nb)
        else:
            _rows(rowdot, W2, X, XS, Y2, (c - n0 - n1) * chunk, chunk, nb)


@njit(inline="always")
def _fused_rows(rowdot, bs, sums, W, X, Y, chunk):
    """The kernel's body for a type with a whole-row dot product in vector IR (:mod:`.vdots`):
    ``Y[t, r] = rowdot(W[r], X[t], XS[t], blocks)``, ``XS`` the sums of ``X`` per 16 columns
    (when ``sums``)."""
    _prange_rows(rowdot, W, X, _x_sums(X, sums), Y, chunk, X.shape[1] // bs)


@njit(inline="always")
def _fused_rows3(rowdot, bs, sums, W0, W1, W2, X, Y0, Y1, Y2, chunk):
    """:func:`_fused_rows` for three matrices of one type and width sharing the activations ``X``
    (a layer's q/k/v, or gate/up with an empty third): one launch, their row chunks in one
    ``prange``."""
    _prange_rows3(rowdot, W0, W1, W2, X, _x_sums(X, sums), Y0, Y1, Y2, chunk, X.shape[1] // bs)


@njit(inline="always")
def _split(X, slots):
    """The split activations of :mod:`.idots` (``ok`` False: a group it does not take)."""
    T, cols = X.shape
    XQ = np.empty((T, 3 * cols), np.int8)
    XS = np.empty((T, cols // 8), F32)
    return idt.split_x(X, slots, XQ, XS), XQ, XS


@njit(inline="always")
def _split64(X):
    """:func:`_split` by 64 columns (:func:`.idots.split_x64`; ``ok`` False also for rows that
    are not a multiple of 64)."""
    T, cols = X.shape
    XQ = np.empty((T, 3 * cols), np.int8)
    XS = np.empty((T, cols // 8), F32)
    return cols % idt.PAIR == 0 and idt.split_x64(X, XQ, XS), XQ, XS


@njit(inline="always")
def _fused_int(rowdot, fallback, slots, W, X, Y, chunk):
    """A K-quant kernel on integer dot products (:mod:`.idots`), or on the float ``fallback``
    row dot when the activations do not split; ``slots``: the type's column groups in the split
    (:data:`.idots.Q4_K_SLOTS`)."""
    ok, XQ, XS = _split(X, slots)
    if ok:
        _prange_rows(rowdot, W, XQ, XS, Y, chunk, X.shape[1] // 256)
    else:
        _fused_rows(fallback, 256, True, W, X, Y, chunk)


@njit(inline="always")
def _fused_int3(rowdot, fallback, slots, W0, W1, W2, X, Y0, Y1, Y2, chunk):
    """:func:`_fused_int` for three matrices sharing ``X``."""
    ok, XQ, XS = _split(X, slots)
    if ok:
        _prange_rows3(rowdot, W0, W1, W2, XQ, XS, Y0, Y1, Y2, chunk, X.shape[1] // 256)
    else:
        _fused_rows3(fallback, 256, True, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(inline="always")
def _int64(rowdot, W, X, Y, chunk):
    """A 32-weight type on integer dot products, two blocks at a time (:data:`.idots.PAIR`), when
    its rows are a multiple of 64 and the activations split: True; else False, ``Y`` untouched
    (the caller's float kernel takes it)."""
    ok, XQ, XS = _split64(X)
    if ok:
        _prange_rows(rowdot, W, XQ, XS, Y, chunk, X.shape[1] // idt.PAIR)
    return ok


@njit(inline="always")
def _fused_int64(rowdot, fallback, W, X, Y, chunk, mins=False):
    """A 32-weight type (Q4_0 ... Q8_0, IQ4_NL) on integer dot products (:func:`_int64`), else
    on the float ``fallback`` row dot (``mins``: a type with a min, whose float kernel takes the
    sums of ``X``)."""
    if not _int64(rowdot, W, X, Y, chunk):
        _fused_rows(fallback, 32, mins, W, X, Y, chunk)


@njit(inline="always")
def _fused_int64_3(rowdot, fallback, W0, W1, W2, X, Y0, Y1, Y2, chunk, mins=False):
    """:func:`_fused_int64` for three matrices sharing ``X``."""
    ok, XQ, XS = _split64(X)
    if ok:
        _prange_rows3(rowdot, W0, W1, W2, XQ, XS, Y0, Y1, Y2, chunk, X.shape[1] // idt.PAIR)
    else:
        _fused_rows3(fallback, 32, mins, W0, W1, W2, X, Y0, Y1, Y2, chunk)


# One module-level function per type (not made by a factory: Numba's disk cache cannot key
# closures across processes, so factory-made kernels were compiled again in every process).
# Arguments: W (rows, row_bytes) u8, X (T, cols) f32, Y (T, rows) f32, chunk, n16.
@njit(**OPTS)
def fused_f32(W, X, Y, chunk, n16):
    """``W``: a float32 matrix's rows viewed as bytes (``(rows, 4 * cols)`` uint8)."""
    _fused_rows(vd.rowdot_f32, 32, False, W, X, Y, chunk)


@njit(**OPTS)
def fused_q4_0(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q4_0, 32, False, W, X, Y, chunk)


@njit(**OPTS)
def fused_q4_1(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q4_1, 32, True, W, X, Y, chunk)


@njit(**OPTS)
def fused_q5_0(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q5_0, 32, False, W, X, Y, chunk)


@njit(**OPTS)
def fused_q5_1(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q5_1, 32, True, W, X, Y, chunk)


@njit(**OPTS)
def fused_q8_0(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q8_0, 32, False, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq4_nl(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_iq4_nl, 32, False, W, X, Y, chunk)


@njit(**OPTS)
def fused_mxfp4(W, X, Y, chunk, n16):
    _fused(ld.dot_mxfp4, 32, 17, W, X, Y, chunk, n16)


@njit(**OPTS)
def fused_f16(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_f16, 32, False, W, X, Y, chunk)


@njit(**OPTS)
def fused_bf16(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_bf16, 32, False, W, X, Y, chunk)


@njit(**OPTS)
def fused_q2_k(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q2_k, 256, True, W, X, Y, chunk)


@njit(**OPTS)
def fused_q3_k(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q3_k, 256, True, W, X, Y, chunk)


@njit(**OPTS)
def fused_q4_k(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q4_k, 256, True, W, X, Y, chunk)


@njit(**OPTS)
def fused_q5_k(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q5_k, 256, True, W, X, Y, chunk)


@njit(**OPTS)
def fused_q6_k(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_q6_k, 256, True, W, X, Y, chunk)


@njit(**OPTS)
def fused_q4_k_int(W, X, Y, chunk, n16):
    """Q4_K on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int(idt.rowdot_q4_k, vd.rowdot_q4_k, idt.Q4_K_SLOTS, W, X, Y, chunk)


@njit(**OPTS)
def fused_q5_k_int(W, X, Y, chunk, n16):
    """Q5_K on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int(idt.rowdot_q5_k, vd.rowdot_q5_k, idt.Q4_K_SLOTS, W, X, Y, chunk)


@njit(**OPTS)
def fused_q6_k_int(W, X, Y, chunk, n16):
    """Q6_K on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int(idt.rowdot_q6_k, vd.rowdot_q6_k, idt.Q6_K_SLOTS, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq4_xs(W, X, Y, chunk, n16):
    _fused_rows(vd.rowdot_iq4_xs, 256, False, W, X, Y, chunk)


@njit(**OPTS)
def fused_tq1_0(W, X, Y, chunk, n16):
    _fused(kd.dot_tq1_0, 256, 54, W, X, Y, chunk, n16)


@njit(**OPTS)
def fused_tq2_0(W, X, Y, chunk, n16):
    _fused(kd.dot_tq2_0, 256, 66, W, X, Y, chunk, n16)


@njit(**OPTS)
def fused_q4_0_int(W, X, Y, chunk, n16):
    """Q4_0 on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int64(idt.rowdot_q4_0, vd.rowdot_q4_0, W, X, Y, chunk)


@njit(**OPTS)
def fused_q4_1_int(W, X, Y, chunk, n16):
    """Q4_1 on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int64(idt.rowdot_q4_1, vd.rowdot_q4_1, W, X, Y, chunk, True)


@njit(**OPTS)
def fused_q5_1_int(W, X, Y, chunk, n16):
    """Q5_1 on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int64(idt.rowdot_q5_1, vd.rowdot_q5_1, W, X, Y, chunk, True)


@njit(**OPTS)
def fused_q5_0_int(W, X, Y, chunk, n16):
    """Q5_0 on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int64(idt.rowdot_q5_0, vd.rowdot_q5_0, W, X, Y, chunk)


@njit(**OPTS)
def fused_q8_0_int(W, X, Y, chunk, n16):
    """Q8_0 on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int64(idt.rowdot_q8_0, vd.rowdot_q8_0, W, X, Y, chunk)


@njit(**OPTS)
def fused_q2_k_int(W, X, Y, chunk, n16):
    """Q2_K on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int(idt.rowdot_q2_k, vd.rowdot_q2_k, idt.Q6_K_SLOTS, W, X, Y, chunk)


@njit(**OPTS)
def fused_q3_k_int(W, X, Y, chunk, n16):
    """Q3_K on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int(idt.rowdot_q3_k, vd.rowdot_q3_k, idt.Q6_K_SLOTS, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq4_nl_int(W, X, Y, chunk, n16):
    """IQ4_NL on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int64(idt.rowdot_iq4_nl, vd.rowdot_iq4_nl, W, X, Y, chunk)


@njit(**OPTS)
def fused_mxfp4_int(W, X, Y, chunk, n16):
    """MXFP4 on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`); rows
    that are not a multiple of 64 and activations the split refuses take the block dots."""
    if not _int64(idt.rowdot_mxfp4, W, X, Y, chunk):
        _fused(ld.dot_mxfp4, 32, 17, W, X, Y, chunk, n16)


@njit(**OPTS)
def fused_iq4_xs_int(W, X, Y, chunk, n16):
    """IQ4_XS on integer dot products (:mod:`.idots`; only where :data:`.idots.AVAILABLE`)."""
    _fused_int(idt.rowdot_iq4_xs, vd.rowdot_iq4_xs, idt.IQ4_XS_SLOTS, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq2_xxs(W, X, Y, chunk, n16):
    _decoded(iq2.dequantize_iq2_xxs, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq2_xs(W, X, Y, chunk, n16):
    _decoded(iq2.dequantize_iq2_xs, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq2_s(W, X, Y, chunk, n16):
    _decoded(iq2s.dequantize_iq2_s, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq3_xxs(W, X, Y, chunk, n16):
    _decoded(iq3.dequantize_iq3_xxs, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq3_s(W, X, Y, chunk, n16):
    _decoded(iq3.dequantize_iq3_s, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq1_s(W, X, Y, chunk, n16):
    _decoded(iq1.dequantize_iq1_s, W, X, Y, chunk)


@njit(**OPTS)
def fused_iq1_m(W, X, Y, chunk, n16):
    _decoded(iq1.dequantize_iq1_m, W, X, Y, chunk)


@njit(**OPTS)
def fused_nvfp4(W, X, Y, chunk, n16):
    _decoded(fp4.dequantize_nvfp4, W, X, Y, chunk)


# The kernels in use: on integer dot products where the CPU has them (:mod:`.idots`).
Q4_K_KERNEL, Q5_K_KERNEL, Q6_K_KERNEL = ((fused_q4_k_int, fused_q5_k_int, fused_q6_k_int) if idt.AVAILABLE
                                          else (fused_q4_k, fused_q5_k, fused_q6_k))
Q4_0_KERNEL, Q5_0_KERNEL, Q8_0_KERNEL = ((fused_q4_0_int, fused_q5_0_int, fused_q8_0_int) if idt.AVAILABLE
                                          else (fused_q4_0, fused_q5_0, fused_q8_0))
IQ4_NL_KERNEL, IQ4_XS_KERNEL = ((fused_iq4_nl_int, fused_iq4_xs_int) if idt.AVAILABLE
                                else (fused_iq4_nl, fused_iq4_xs))
Q2_K_KERNEL, Q3_K_KERNEL = (fused_q2_k_int, fused_q3_k_int) if idt.AVAILABLE else (fused_q2_k, fused_q3_k)
Q4_1_KERNEL, Q5_1_KERNEL = (fused_q4_1_int, fused_q5_1_int) if idt.AVAILABLE else (fused_q4_1, fused_q5_1)
MXFP4_KERNEL = fused_mxfp4_int if idt.AVAILABLE else fused_mxfp4

# type name -> (kernel, weights per block, bytes per block); F16/BF16 rows are read 32 weights at
# a time
DOTS: dict[str, tuple[Callable, int, int]] = {
    "Q4_0": (Q4_0_KERNEL, 32, 18), "Q4_1": (Q4_1_KERNEL, 32, 20), "Q5_0": (Q5_0_KERNEL, 32, 22),
    "Q5_1": (Q5_1_KERNEL, 32, 24), "Q8_0": (Q8_0_KERNEL, 32, 34), "IQ4_NL": (IQ4_NL_KERNEL, 32, 18),
    "MXFP4": (MXFP4_KERNEL, 32, 17), "F16": (fused_f16, 32, 64), "BF16": (fused_bf16, 32, 64),
    "Q2_K": (Q2_K_KERNEL, 256, 84), "Q3_K": (Q3_K_KERNEL, 256, 110), "Q4_K": (Q4_K_KERNEL, 256, 144),
    "Q5_K": (Q5_K_KERNEL, 256, 176), "Q6_K": (Q6_K_KERNEL, 256, 210),
    "IQ4_XS": (IQ4_XS_KERNEL, 256, 136), "TQ1_0": (fused_tq1_0, 256, 54),
    "TQ2_0": (fused_tq2_0, 256, 66),
    # each row decoded by its codec, then dotted (:func:`_decoded`)
    "IQ2_XXS": (fused_iq2_xxs, 256, 66), "IQ2_XS": (fused_iq2_xs, 256, 74), "IQ2_S": (fused_iq2_s, 256, 82),
    "IQ3_XXS": (fused_iq3_xxs, 256, 98), "IQ3_S": (fused_iq3_s, 256, 110), "IQ1_S": (fused_iq1_s, 256, 50),
    "IQ1_M": (fused_iq1_m, 256, 56), "NVFP4": (fused_nvfp4, 64, 36),
}
def kernel_for(qtype: str) -> Kernel | None:
    """The fused kernel of GGML type ``qtype`` (None: none here, use tiles); compiled, or loaded
    from Numba's disk cache, on its first call."""
    k = DOTS.get(qtype)
    return None if k is None else Kernel(k[1], k[2], k[0])


# The grouped kernels (:func:`_fused_rows3`) of the vector-IR types.
# Arguments: W0, W1, W2 (rows_i, row_bytes) u8, X (T, cols) f32, Y0, Y1, Y2 (T, rows_i) f32, chunk.
@njit(**OPTS)
def fused3_q4_0(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_rows3(vd.rowdot_q4_0, 32, False, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q4_1(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_rows3(vd.rowdot_q4_1, 32, True, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q5_0(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_rows3(vd.rowdot_q5_0, 32, False, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q5_1(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_rows3(vd.rowdot_q5_1, 32, True, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q8_0(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_rows3(vd.rowdot_q8_0, 32, False, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q4_k(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_rows3(vd.rowdot_q4_k, 256, True, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q5_k(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_rows3(vd.rowdot_q5_k, 256, True, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q6_k(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_rows3(vd.rowdot_q6_k, 256, True, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q4_k_int(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_int3(idt.rowdot_q4_k, vd.rowdot_q4_k, idt.Q4_K_SLOTS, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q5_k_int(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_int3(idt.rowdot_q5_k, vd.rowdot_q5_k, idt.Q4_K_SLOTS, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q6_k_int(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_int3(idt.rowdot_q6_k, vd.rowdot_q6_k, idt.Q6_K_SLOTS, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q4_0_int(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_int64_3(idt.rowdot_q4_0, vd.rowdot_q4_0, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q4_1_int(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_int64_3(idt.rowdot_q4_1, vd.rowdot_q4_1, W0, W1, W2, X, Y0, Y1, Y2, chunk, True)


@njit(**OPTS)
def fused3_q5_1_int(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_int64_3(idt.rowdot_q5_1, vd.rowdot_q5_1, W0, W1, W2, X, Y0, Y1, Y2, chunk, True)


@njit(**OPTS)
def fused3_q5_0_int(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_int64_3(idt.rowdot_q5_0, vd.rowdot_q5_0, W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(**OPTS)
def fused3_q8_0_int(W0, W1, W2, X, Y0, Y1, Y2, chunk):
    _fused_int64_3(idt.rowdot_q8_0, vd.rowdot_q8_0, W0, W1, W2, X, Y0, Y1, Y2, chunk)


# The grouped kernels in use: on integer dot products where the CPU has them (:mod:`.idots`).
Q4_K_KERNEL3, Q5_K_KERNEL3, Q6_K_KERNEL3 = (
    (fused3_q4_k_int, fused3_q5_k_int, fused3_q6_k_int) if idt.AVAILABLE
    else (fused3_q4_k, fused3_q5_k, fused3_q6_k))
Q4_0_KERNEL3, Q5_0_KERNEL3, Q8_0_KERNEL3 = (
    (fused3_q4_0_int, fused3_q5_0_int, fused3_q8_0_int) if idt.AVAILABLE
    else (fused3_q4_0, fused3_q5_0, fused3_q8_0))
Q4_1_KERNEL3, Q5_1_KERNEL3 = ((fused3_q4_1_int, fused3_q5_1_int) if idt.AVAILABLE
                              else (fused3_q4_1, fused3_q5_1))

GROUPED: dict[str, Callable] = {
    "Q4_0": Q4_0_KERNEL3, "Q4_1": Q4_1_KERNEL3, "Q5_0": Q5_0_KERNEL3, "Q5_1": Q5_1_KERNEL3,
    "Q8_0": Q8_0_KERNEL3, "Q4_K": Q4_K_KERNEL3, "Q5_K": Q5_K_KERNEL3, "Q6_K": Q6_K_KERNEL3,
}
"""Type name -> the kernel multiplying up to three matrices of that type in one launch."""
