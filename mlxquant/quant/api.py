"""Public quantize/dequantize: validation, backend choice, and dispatch to a codec."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from ..errors import QuantInputError, QuantTypeError
from .types import QuantType, get_codec, get_type

BACKENDS = ("numpy", "auto")

# Rows are split into chunks of about this many weights: small enough to stay in cache, large
# enough that per-chunk Python overhead is negligible. Chunks run on a thread pool (NumPy releases
# the GIL inside its loops); results do not depend on the split, since ggml works row by row.
CHUNK_WEIGHTS = 1 << 19


def _threads() -> int:
    env = os.environ.get("MLXQUANT_THREADS")
    if env:
        return max(1, int(env))
    return os.cpu_count() or 1


def _chunked(
    fn: Callable[[int, int], np.ndarray], rows: int, cols: int, out: np.ndarray
) -> np.ndarray:
    """Fill ``out[r0:r1] = fn(r0, r1)`` over row chunks, in parallel when there is enough work."""
    step = max(1, CHUNK_WEIGHTS // max(cols, 1))
    spans = [(r, min(rows, r + step)) for r in range(0, rows, step)]
    n = min(_threads(), len(spans))

    def work(span: tuple[int, int]) -> None:
        out[span[0] : span[1]] = fn(*span)

    if n <= 1:
        for span in spans:
            work(span)
    else:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(work, spans))
    return out


def _backend(backend: str, t: QuantType) -> str:
    if backend not in BACKENDS:
        raise QuantTypeError(f"{t.name}: unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    return "numpy"


def _check_matrix(x: np.ndarray, t: QuantType) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise QuantInputError(f"{t.name}: expected a 2-D (rows, cols) array, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating)):
        raise QuantInputError(f"{t.name}: expected a float array, got dtype {x.dtype}")
    rows, cols = x.shape
    if cols == 0 or cols % t.block_size:
        raise QuantInputError(
            f"{t.name}: row length {cols} is not a positive multiple of the block size {t.block_size}"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise QuantInputError(f"{t.name}: input contains NaN or Inf (first at row {r}, col {c})")
    return x


def _check_imatrix(imatrix: np.ndarray | None, cols: int, t: QuantType) -> np.ndarray | None:
    if imatrix is None:
        if t.requires_imatrix:
            raise QuantInputError(f"{t.name}: this type needs an importance matrix (imatrix)")
        return None
    w = np.asarray(imatrix)
    if w.ndim != 1 or w.shape[0] != cols:
        raise QuantInputError(
            f"{t.name}: imatrix must have shape ({cols},) to match the row length, got {w.shape}"
        )
    if not np.issubdtype(w.dtype, np.floating) and not np.issubdtype(w.dtype, np.integer):
        raise QuantInputError(f"{t.name}: imatrix must be numeric, got dtype {w.dtype}")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise QuantInputError(f"{t.name}: imatrix contains NaN or Inf")
    if (w < 0).any():
        raise QuantInputError(f"{t.name}: imatrix contains negative values (importances are >= 0)")
    return w


def quantize(
    x: np.ndarray,
    qtype: str | int | QuantType,
    *,
    imatrix: np.ndarray | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Quantize a float matrix into GGUF blocks, byte-identical to llama.cpp's quantizer.

    Args:
        x: float array of shape ``(rows, cols)``; ``cols`` must be a multiple of the type's block
            size. Converted to float32 first (as llama.cpp does).
        qtype: a GGML type name such as ``"Q4_K"`` (case-insensitive) or its numeric id.
        imatrix: optional per-column importance weights, shape ``(cols,)``, non-negative (what
            llama.cpp's imatrix tool gives). Used by the types whose ggml quantizer takes one and
            ignored by the others, as in llama.cpp.
        backend: ``"numpy"`` or ``"auto"``.

    Returns:
        uint8 array ``(rows, row_bytes)`` in GGUF block layout.

    Raises:
        QuantTypeError: unknown type, or no codec for it.
        QuantInputError: wrong shape, non-float or non-finite input, bad imatrix.
    """
    t = get_type(qtype)
    backend = _backend(backend, t)
    x = _check_matrix(x, t)
    w = _check_imatrix(imatrix, x.shape[1], t)
    codec = get_codec(t, backend)
    rows, cols = x.shape
    out = np.empty((rows, t.row_bytes(cols)), dtype=np.uint8)
    return _chunked(lambda r0, r1: codec.quantize_rows(x[r0:r1], w), rows, cols, out)


def dequantize(
    data: np.ndarray | bytes | bytearray | memoryview,
    qtype: str | int | QuantType,
    shape: tuple[int, ...],
    *,
    backend: str = "auto",
) -> np.ndarray:
    """Decode GGUF blocks to float32.

    Args:
        data: the raw bytes (any array shape; read as a flat uint8 buffer).
        qtype: the GGML type of ``data``.
        shape: the logical tensor shape; its last dimension must be a multiple of the block size.

    Returns:
        float32 array of ``shape``.
    """
    t = get_type(qtype)
    backend = _backend(backend, t)
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    if not shape or any(s < 0 for s in shape):
        raise QuantInputError(f"{t.name}: invalid shape {shape}")
    cols = shape[-1]
    if cols == 0 or cols % t.block_size:
        raise QuantInputError(
            f"{t.name}: last dimension {cols} is not a positive multiple of the block size {t.block_size}"
        )
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buf.dtype != np.uint8:
        raise QuantInputError(f"{t.name}: expected uint8 bytes, got dtype {buf.dtype}")
    expected = rows * t.row_bytes(cols)
    if buf.size != expected:
        raise QuantInputError(
            f"{t.name}: {buf.size} bytes given, shape {shape} needs {expected}"
        )
    buf = np.ascontiguousarray(buf).reshape(rows, t.row_bytes(cols))
    codec = get_codec(t, backend)
    out = np.empty((rows, cols), dtype=np.float32)
    return _chunked(lambda r0, r1: codec.dequantize_rows(buf[r0:r1], cols), rows, cols, out).reshape(shape)
