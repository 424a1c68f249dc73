"""KL(reference || perturbed) per token from two sets of logits, fast and exact enough for tiny
divergences.

The gains (:mod:`.costs`) compare the float model with one whose single tensor is quantized: the
divergences are often 1e-5..1e-3 nats, while the log-probabilities they come from are ~10. The
textbook ``sum p (log p - log q)`` over two log-softmaxes loses those digits to cancellation
unless it runs in float64, and costs two (T, vocab) float64 passes per comparison.

Here, with ``d = logits - ref`` (small where the change is small) and ``p = softmax(ref)``::

    KL = log(sum_v p_v e^d_v) - sum_v p_v d_v
       = sum_v p_v (expm1(d_v) - d_v) + (log1p(s) - s),   s = sum_v p_v expm1(d_v)

Every term of the first sum is >= 0 (about ``p d^2 / 2``), the second is a float64 scalar: no
cancellation, one compiled pass over the logits (rows over the threads), ``p`` computed once.
``expm1(d) - d`` comes from its series where every ``|d|`` of a row is small (the usual case:
one vectorized loop, ~10x faster than a float64 ``expm1`` per element), else from float64
``expm1``; where some ``|d|`` is large, ``e^d`` would make the two terms cancel, and the row is
computed as a shifted log-sum-exp instead. ``p`` is renormalized in float64 (float32 values sum
to 1 only within rounding).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


SERIES = np.float32(0.5)  # |d| up to which expm1(d) - d is taken from its series (below)
EXPM1 = np.float32(8.0)  # |d| up to which float64 expm1 sums do not cancel (e^8 * 1e-16 ~ 3e-13)
F32 = np.float32


@njit(nogil=True, cache=True, boundscheck=False)
def _kl_expm1(ref, p, logits, t):
    """Row ``t``'s KL with float64 ``expm1`` (every ``|d|`` <= :data:`EXPM1`)."""
    s = 0.0
    acc = 0.0
    sp = 0.0
    for v in range(ref.shape[1]):
        d = np.float64(logits[t, v]) - np.float64(ref[t, v])
        e = math.expm1(d)
        pv = np.float64(p[t, v])
        s += pv * e
        acc += pv * (e - d)
        sp += pv
    return _total(s, acc, sp)


@njit(nogil=True, cache=True, boundscheck=False)
def _kl_lse(ref, p, logits, t):
    """Row ``t``'s KL when some ``|d|`` is past :data:`EXPM1`: ``log sum p e^d - sum p d`` in
    float64 with the log-sum-exp shifted by its largest term (``expm1`` sums would cancel
    catastrophically once ``e^d`` is large); NaN where a logit is not finite."""
    V = ref.shape[1]
    m = -np.inf
    sp = 0.0
    for v in range(V):
        d = np.float64(logits[t, v]) - np.float64(ref[t, v])
        if not np.isfinite(d):
            return np.nan
        pv = np.float64(p[t, v])
        sp += pv
        if pv > 0:
            m = max(m, math.log(pv) + d)
    z = 0.0
    pd = 0.0
    for v in range(V):
        pv = np.float64(p[t, v])
        if pv > 0:
            d = np.float64(logits[t, v]) - np.float64(ref[t, v])
            z += math.exp(math.log(pv) + d - m)
            pd += pv * d
    return m + math.log(z / sp) - pd / sp


@njit(inline="always")
def _total(s, acc, sp):
    """The KL from the sums, ``p`` normalized in float64 (its float32 values sum to 1 only within
    rounding, which would otherwise leave ~1e-10 of a uniform shift's c^2/2 uncancelled)."""
    s /= sp
    return acc / sp + (math.log1p(s) - s)


@njit(parallel=True, nogil=True, cache=True, boundscheck=False,
      fastmath={"reassoc", "contract", "nsz"})
def _kl_rows(ref: np.ndarray, p: np.ndarray, logits: np.ndarray, out: np.ndarray) -> None:
    """KL of every row: ``expm1(d) - d`` from its Taylor series to ``d^10`` (relative error
    < 1e-9 for ``|d| <= 1/2``; float64, in a loop LLVM vectorizes: no call per element); a row
    where some ``|d|`` is larger is computed again by :func:`_kl_expm1` (``|d| <= 8``) or
    :func:`_kl_lse` (larger, or not finite). ``d`` is the float32 difference, exact where it is
    small (two close floats)."""
    for t in prange(ref.shape[0]):
        s = 0.0
        acc = 0.0
        sp = 0.0
        far = 0
        farther = 0
        for v in range(ref.shape[1]):
            d32 = logits[t, v] - ref[t, v]
            far += np.int32(not (abs(d32) <= SERIES))
            farther += np.int32(not (abs(d32) <= EXPM1))
            d = np.float64(d32)
            r = d * d * (1 / 2 + d * (1 / 6 + d * (1 / 24 + d * (1 / 120 + d * (1 / 720 + d * (
                1 / 5040 + d * (1 / 40320 + d * (1 / 362880 + d / 3628800))))))))
            pv = np.float64(p[t, v])
            s += pv * (d + r)
            acc += pv * r
            sp += pv
        if farther:
            out[t] = _kl_lse(ref, p, logits, t)
        elif far:
            out[t] = _kl_expm1(ref, p, logits, t)
        else:
            out[t] = _total(s, acc, sp)


class Reference:
    """The reference logits ``(T, vocab)`` of one window and their softmax, kept for comparisons."""

    def __init__(self, logits: np.ndarray):
        ref = np.ascontiguousarray(logits, dtype=np.float32)
        x = ref - ref.max(axis=-1, keepdims=True)  # float32: p is kept in float32 anyway, and
        np.exp(x, out=x)  # the kernel renormalizes it in float64
        x /= x.sum(axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)
        self.logits, self.p = ref, x

    def kl(self, logits: np.ndarray) -> np.ndarray:
        """KL(softmax(reference) || softmax(``logits``)) of every row, float64 ``(T,)``."""
        q = np.ascontiguousarray(logits, dtype=np.float32)
        if q.shape != self.logits.shape:
            raise ValueError(f"logits of shape {q.shape}, the reference has {self.logits.shape}")
        out = np.empty(q.shape[0], np.float64)
        _kl_rows(self.logits, self.p, q, out)
        return out
