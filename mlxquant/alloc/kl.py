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
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(parallel=True, nogil=True, cache=True, boundscheck=False)
def _kl_rows(ref: np.ndarray, p: np.ndarray, logits: np.ndarray, out: np.ndarray) -> None:
    for t in prange(ref.shape[0]):
        s = 0.0
        acc = 0.0
        for v in range(ref.shape[1]):
            d = np.float64(logits[t, v]) - np.float64(ref[t, v])
            e = math.expm1(d)
            pv = np.float64(p[t, v])
            s += pv * e
            acc += pv * (e - d)
        out[t] = acc + (math.log1p(s) - s)


class Reference:
    """The reference logits ``(T, vocab)`` of one window and their softmax, kept for comparisons."""

    def __init__(self, logits: np.ndarray):
        ref = np.ascontiguousarray(logits, dtype=np.float32)
        x = ref.astype(np.float64)
        x -= x.max(axis=-1, keepdims=True)
        np.exp(x, out=x)
        x /= x.sum(axis=-1, keepdims=True)
        self.logits, self.p = ref, x.astype(np.float32)

    def kl(self, logits: np.ndarray) -> np.ndarray:
        """KL(softmax(reference) || softmax(``logits``)) of every row, float64 ``(T,)``."""
        q = np.ascontiguousarray(logits, dtype=np.float32)
        if q.shape != self.logits.shape:
            raise ValueError(f"logits of shape {q.shape}, the reference has {self.logits.shape}")
        out = np.empty(q.shape[0], np.float64)
        _kl_rows(self.logits, self.p, q, out)
        return out
