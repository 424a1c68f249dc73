"""Base class of the compiled codecs: a type's two kernels behind the :class:`~..codec.Codec` API.

A subclass names its kernels (Numba functions, see :mod:`.numeric` for the conventions)::

    class Q4_K(JitCodec, qtype="Q4_K", backend="numba"):
        quantize_kernel = staticmethod(quantize_q4_k)      # (x f32[rows, cols], w f32[cols or 0], out u8[rows, row_bytes])
        dequantize_kernel = staticmethod(dequantize_q4_k)  # (data u8[rows, row_bytes], out f32[rows, cols])

``w`` is the importance matrix, or an empty array when there is none (or the type ignores it).
Kernels fill ``out`` in place; the API has validated shapes, dtypes and finiteness already.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np

from ..codec import Codec
from ..buffers import EMPTY_WEIGHTS, output


class JitCodec(Codec):
    quantize_kernel: ClassVar[Callable]
    dequantize_kernel: ClassVar[Callable]
    chunk_weights = 1 << 22  # kernels stream: big chunks, at least one per thread (api._chunked)
    # the quantize kernel returns 1 when its input holds NaN or Inf (then the API finds and
    # names the first one); otherwise the API checks each chunk before the kernel sees it
    checks_finite: ClassVar[bool] = False

    @classmethod
    def quantize_rows(cls, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        rows, cols = x.shape
        out = output((rows, cls.qtype.row_bytes(cols)), np.uint8)
        w = imatrix if imatrix is not None and cls.qtype.uses_imatrix else EMPTY_WEIGHTS
        cls.quantize_kernel(np.ascontiguousarray(x, dtype=np.float32), w, out)
        return out

    @classmethod
    def dequantize_rows(cls, data: np.ndarray, cols: int) -> np.ndarray:
        out = output((data.shape[0], cols), np.float32)
        cls.dequantize_kernel(np.ascontiguousarray(data), out)
        return out
