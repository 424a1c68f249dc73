"""Float32 arithmetic that follows ggml's C code exactly.

ggml accumulates in float32, one element after another; NumPy's ``sum`` is pairwise and gives
different low bits. Everything here keeps ggml's order so that codecs can be byte-identical.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def seq_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis in strict left-to-right float32 order (``s = 0; s += a[i]``)."""
    a = np.asarray(a, dtype=np.float32)
    acc = np.zeros(a.shape[:-1], dtype=np.float32)
    for i in range(a.shape[-1]):
        acc += a[..., i]
    return acc


def seq_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``s = 0; s += a[i]*b[i]`` over the last axis, float32, no fused multiply-add."""
    return seq_sum(np.multiply(a, b, dtype=np.float32))


def nearest_int(x: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: round half to even (valid for |x| < 2**22), as int32."""
    return np.rint(x).astype(np.int32)


def fp16_round(x: np.ndarray) -> np.ndarray:
    """Round float32 to float16 as ggml's GGML_FP32_TO_FP16 does and back to float32."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def fp16_bytes(x: np.ndarray) -> np.ndarray:
    """float32 (n,) -> (n, 2) uint8, little-endian float16."""
    return np.asarray(x, dtype=np.float32).astype("<f2").view(np.uint8).reshape(-1, 2)


def fp16_from_bytes(b: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 little-endian float16 -> (n,) float32."""
    return np.ascontiguousarray(b).view("<f2").reshape(-1).astype(np.float32)


def pack_nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two arrays of 4-bit codes -> bytes ``lo | hi << 4`` (uint8)."""
    return (lo.astype(np.uint8) & 0x0F) | ((hi.astype(np.uint8) & 0x0F) << 4)
