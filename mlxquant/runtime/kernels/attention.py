"""One decode step's attention in one compiled call: :func:`attend_one`.

Decoding feeds one token per step, so its attention is small (``heads x context x head_dim``
multiply-adds) and NumPy spent most of it in call overhead: RoPE on Q and K, the KV cache write,
the scale, the Q.K scores, the softmax and the weighted sum of V took ~25 NumPy calls per layer,
~50 us on the tiny model where the arithmetic is ~1 us (issue 16). Here they are one call.

Same arithmetic as the NumPy path of :class:`~mlxquant.runtime.numpy_model.NumpyModel` (RoPE in
the rotate-half form, scores scaled after RoPE, a float32 softmax with the maximum subtracted, as
llama.cpp does) up to float32 rounding: the sums run in another order (``fastmath`` allows
``reassoc``, so LLVM vectorizes the loop over ``head_dim``, ``contract`` for FMA, and ``nsz``;
no finite-math assumption, so NaN and inf propagate). Grouped-query attention: query head ``h``
reads KV head ``h // (heads // kv_heads)``. The query heads are split over Numba's threads
(``prange``; the caller sets the count, :func:`~.matrix.launch`): at a few hundred positions a
head's scores, softmax and sum take tens of microseconds, and 9 heads on 2 threads ran a
SmolLM2 layer's attention 1.7x faster than one thread. The KV cache is written first, by one
thread. Models whose linears run on BLAS use :func:`attend_one_serial` instead (see there).

:func:`rms_norm_row` is the RMS norm of one row (a decode step's hidden state), compiled: the
NumPy form's half-dozen calls cost ~13 us a norm, two per block.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

F32 = np.float32


@njit(inline="always")
def _attend_one(q, k, v, cos, sin, K, V, pos, start, scale, out):
    """Attention of one new token at position ``pos``.

    Args (float32 unless said):
        q: ``(heads, head_dim)`` queries before RoPE; k, v: ``(kv_heads, head_dim)``.
        cos, sin: ``(head_dim,)`` RoPE tables ``[cos, cos]`` and ``[-sin, sin]`` of ``pos``.
        K, V: the layer's cache ``(kv_heads, capacity, head_dim)``; ``k`` (rotated) and ``v`` are
            written at ``pos``.
        start: first visible key position (0, or the sliding window's start).
        scale: float32 score scale.
        out: ``(heads, head_dim)``, receives the attention output.
    """
    H, D = q.shape
    KV = k.shape[0]
    g = H // KV
    half = D // 2
    for j in range(KV):
        for d in range(D):
            sw = d + half if d < half else d - half
            K[j, pos, d] = k[j, d] * cos[d] + k[j, sw] * sin[d]
            V[j, pos, d] = v[j, d]
    n = pos + 1 - start
    for h in prange(H):  # a plain range where the caller is not parallel
        j = h // g
        qr = np.empty(D, F32)
        w = np.empty(n, F32)
        for d in range(D):
            sw = d + half if d < half else d - half
            qr[d] = (q[h, d] * cos[d] + q[h, sw] * sin[d]) * scale
        top = F32(-np.inf)
        for s in range(n):
            acc = F32(0)
            for d in range(D):
                acc += qr[d] * K[j, start + s, d]
            w[s] = acc
            top = max(top, acc)
        total = F32(0)
        for s in range(n):
            e = np.exp(w[s] - top)
            w[s] = e
            total += e
        for d in range(D):
            out[h, d] = 0
        for s in range(n):
            p = w[s] / total
            for d in range(D):
                out[h, d] += p * V[j, start + s, d]


@njit(parallel=True, nogil=True, cache=True, boundscheck=False, error_model="numpy",
      fastmath={"reassoc", "contract", "nsz"})
def attend_one(q, k, v, cos, sin, K, V, pos, start, scale, out):
    """:func:`_attend_one` with its heads over Numba's threads (launch with
    :func:`~.matrix.launch`)."""
    _attend_one(q, k, v, cos, sin, K, V, pos, start, scale, out)


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy",
      fastmath={"reassoc", "contract", "nsz"})
def attend_one_serial(q, k, v, cos, sin, K, V, pos, start, scale, out):
    """:func:`_attend_one` on the calling thread: for models whose decode step multiplies by BLAS
    (float weights), where OpenBLAS's threads and Numba's OpenMP threads, each spinning after
    its calls, took the 2 cores from each other (an F32 SmolLM2 step took 0.27 s instead of
    0.03 s)."""
    _attend_one(q, k, v, cos, sin, K, V, pos, start, scale, out)


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy",
      fastmath={"reassoc", "contract", "nsz"})
def rms_norm_row(x, w, eps, out):
    """``out = x / sqrt(mean(x^2) + eps) * w`` for one float32 row ``x`` (``eps`` float32), as
    :func:`mlxquant.runtime.ops.rms_norm` computes it up to the order of the float32 sum."""
    n = x.shape[0]
    ss = F32(0)
    for i in range(n):
        ss += x[i] * x[i]
    inv = F32(1) / np.sqrt(ss / F32(n) + eps)
    for i in range(n):
        out[i] = x[i] * inv * w[i]
