"""Output buffers shared by the API and every codec backend (NumPy, compiled, MLX).

The API's row-chunk pool offers each chunk's slice of the final array with :func:`destination`;
a codec that allocates its result with :func:`output` writes straight into it, saving a copy.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np

EMPTY_WEIGHTS = np.zeros(0, dtype=np.float32)  # "no imatrix" for the compiled kernels' weight argument

_DEST = threading.local()


@contextmanager
def destination(buf: np.ndarray) -> Iterator[None]:
    """Offer ``buf`` (C-contiguous) as the output of the codec call made inside the block, on this
    thread: a codec that builds its result with :func:`output` writes straight into it, and the
    caller (:func:`mlxquant.quant.api._chunked`) sees that the result already is ``buf`` and
    skips a copy. Codecs that ignore the offer still work (their result is copied)."""
    prev = getattr(_DEST, "buf", None)
    _DEST.buf = buf
    try:
        yield
    finally:
        _DEST.buf = prev


def output(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialized array for a codec's result: the buffer offered by :func:`destination`
    when it has the same size and dtype (taken once, so inner helpers get fresh arrays), else
    ``np.empty``."""
    buf = getattr(_DEST, "buf", None)
    if buf is not None:
        _DEST.buf = None
        n = 1
        for s in shape:
            n *= s
        if buf.dtype == np.dtype(dtype) and buf.size == n and buf.flags.c_contiguous:
            return buf.reshape(shape)
    return np.empty(shape, dtype=dtype)


def is_view_of(a: np.ndarray, buf: np.ndarray) -> bool:
    """True when ``a`` is exactly ``buf``'s memory in the same layout (a no-op copy)."""
    return (
        a.dtype == buf.dtype
        and a.shape == buf.shape
        and a.strides == buf.strides
        and a.__array_interface__["data"][0] == buf.__array_interface__["data"][0]
    )
