"""MLX's own quantization formats through the same ``quantize``/``dequantize`` door.

Spelling (case-insensitive):

==========================  =====================================================
``MLX_Q{bits}_G{group}``    affine, bits 2, 3, 4, 5, 6, 8; group 32, 64 or 128
``mlx{bits}``               shorthand for ``MLX_Q{bits}_G64`` (mlx-lm's default group)
``MLX_MXFP4``               mxfp4: E2M1 values, E8M0 scale per 32 (group 32)
``MLX_NVFP4``               nvfp4: E2M1 values, E4M3 scale per 16 (group 16)
``MLX_MXFP8``               mxfp8: E4M3 values, E8M0 scale per 32 (group 32)
==========================  =====================================================

``quantize`` returns an :class:`MLXQuantized` (packed uint32 weight, scales, biases — ``None``
for the fp modes) exactly as ``mx.quantize`` makes them; scales take the input dtype, as in MLX.
They are MLX arrays for MLX input and NumPy arrays for NumPy input. These formats are computed by
MLX itself (on its default device), whatever ``backend`` says, except that ``backend="numpy"``
and ``backend="numba"`` are refused: there is no CPU codec of ours for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import QuantInputError, QuantTypeError

AFFINE_BITS = (2, 3, 4, 5, 6, 8)
AFFINE_GROUPS = (32, 64, 128)
_FP_MODES = {"MXFP4": ("mxfp4", 4, 32), "NVFP4": ("nvfp4", 4, 16), "MXFP8": ("mxfp8", 8, 32)}


@dataclass(frozen=True)
class MLXFormat:
    """One MLX quantization format: ``mode`` ("affine", "mxfp4", "nvfp4", "mxfp8"), bits and group."""

    name: str
    mode: str
    bits: int
    group_size: int

    @property
    def bits_per_weight(self) -> float:
        """Bits per weight with float16 scales (and biases, for affine)."""
        if self.mode == "affine":
            return self.bits + 32 / self.group_size
        return self.bits + 8 / self.group_size


class MLXQuantized(NamedTuple):
    """What ``mx.quantize`` returns: packed codes, scales and (affine only) biases."""

    weight: Any
    scales: Any
    biases: Any = None


def parse_mlx_format(qtype: object) -> MLXFormat | None:
    """The MLX format a name spells, ``None`` if it is not an MLX name at all.

    Raises:
        QuantTypeError: an MLX name with an unsupported bits/group combination.
    """
    if not isinstance(qtype, str):
        return None
    s = qtype.strip().upper()
    m = re.fullmatch(r"MLX(\d+)", s)
    if m:
        s = f"MLX_Q{m.group(1)}_G64"
    if s.startswith("MLX_") and s[4:] in _FP_MODES:
        mode, bits, group = _FP_MODES[s[4:]]
        return MLXFormat(s, mode, bits, group)
    m = re.fullmatch(r"MLX_Q(\d+)_G(\d+)", s)
    if m is None:
        if s.startswith("MLX"):
            raise QuantTypeError(
                f"unknown MLX format {qtype!r}; use MLX_Q<bits>_G<group> (bits {AFFINE_BITS}, "
                f"group {AFFINE_GROUPS}), mlx<bits>, MLX_MXFP4, MLX_NVFP4 or MLX_MXFP8"
            )
        return None
    bits, group = int(m.group(1)), int(m.group(2))
    if bits not in AFFINE_BITS or group not in AFFINE_GROUPS:
        raise QuantTypeError(
            f"{s}: MLX affine takes bits {AFFINE_BITS} and group sizes {AFFINE_GROUPS}"
        )
    return MLXFormat(s, "affine", bits, group)


def _mx():
    import mlx.core as mx

    return mx


def quantize_mlx(x: Any, fmt: MLXFormat, backend: str) -> MLXQuantized:
    """``mx.quantize`` with mlxquant's validation; output type follows the input type."""
    if backend in ("numpy", "numba"):
        raise QuantTypeError(f"{fmt.name}: no {backend} codec (MLX formats are computed by MLX)")
    mx = _mx()
    as_mx = isinstance(x, mx.array)
    shape = tuple(x.shape) if as_mx else np.shape(x)
    if len(shape) != 2:
        raise QuantInputError(f"{fmt.name}: expected a 2-D (rows, cols) array, got shape {shape}")
    if shape[1] == 0 or shape[1] % fmt.group_size:
        raise QuantInputError(
            f"{fmt.name}: row length {shape[1]} is not a positive multiple of the group size {fmt.group_size}"
        )
    xa = x if as_mx else mx.array(np.asarray(x))
    if not mx.issubdtype(xa.dtype, mx.floating):
        raise QuantInputError(f"{fmt.name}: expected a float array, got dtype {xa.dtype}")
    bad = mx.logical_not(mx.isfinite(xa)).reshape(-1)
    if mx.any(bad).item():
        i = int(mx.argmax(bad).item())
        raise QuantInputError(
            f"{fmt.name}: input contains NaN or Inf (first at row {i // shape[1]}, col {i % shape[1]})"
        )
    out = mx.quantize(xa, group_size=fmt.group_size, bits=fmt.bits, mode=fmt.mode)
    parts = list(out) + [None] * (3 - len(out))
    if not as_mx:
        parts = [None if p is None else np.array(p) for p in parts]
    return MLXQuantized(*parts)


def dequantize_mlx(data: Any, fmt: MLXFormat, shape: tuple[int, ...], backend: str) -> Any:
    """``mx.dequantize`` to float32 of ``shape``; ``data`` is an :class:`MLXQuantized` (or tuple)."""
    if backend in ("numpy", "numba"):
        raise QuantTypeError(f"{fmt.name}: no {backend} codec (MLX formats are computed by MLX)")
    mx = _mx()
    if not isinstance(data, tuple) or len(data) not in (2, 3):
        raise QuantInputError(f"{fmt.name}: expected (weight, scales[, biases]) from quantize")
    w, scales, biases = (tuple(data) + (None,))[:3]
    as_mx = isinstance(w, mx.array)
    w, scales = (a if isinstance(a, mx.array) else mx.array(np.asarray(a)) for a in (w, scales))
    if biases is not None and not isinstance(biases, mx.array):
        biases = mx.array(np.asarray(biases))
    if (fmt.mode == "affine") != (biases is not None):
        raise QuantInputError(f"{fmt.name}: biases are {'missing' if biases is None else 'unexpected'}")
    shape = tuple(int(s) for s in shape)
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    cols = shape[-1]
    want_w = (rows, cols * fmt.bits // 32)
    want_s = (rows, cols // fmt.group_size)
    if cols % fmt.group_size or tuple(w.shape) != want_w or tuple(scales.shape) != want_s or (
        biases is not None and tuple(biases.shape) != want_s
    ):
        raise QuantInputError(
            f"{fmt.name}: arrays of shapes {tuple(w.shape)}/{tuple(scales.shape)} do not hold a "
            f"{shape} tensor (want weight {want_w}, scales {want_s})"
        )
    out = mx.dequantize(
        w, scales, biases, group_size=fmt.group_size, bits=fmt.bits, mode=fmt.mode, dtype=mx.float32
    ).reshape(shape)
    return out if as_mx else np.array(out)
