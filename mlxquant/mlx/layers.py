"""``GGUFLinear`` and ``GGUFEmbedding``: mlx-lm layers whose weight stays in its GGUF type.

Forward of each form (:mod:`.weights`):

- ``quantized``: ``mx.quantized_matmul`` / ``mx.dequantize`` of the gathered rows -- MLX's own
  kernels on every backend, values exactly ggml's;
- ``blocks``: on an Apple GPU the Metal kernels of :mod:`.metal` (a matvec for one token, a
  tiled matmul for prompts); elsewhere the blocks are decoded by the MLX twin codec on every call
  and multiplied with ``mx.matmul`` (nothing decoded is kept, so memory stays the file's);
- ``float``: ``mx.matmul`` against the weight in its own dtype (F16/BF16 widen exactly).

Activations of any float dtype are accepted. The values are exactly ggml's for float32 activations
(mlxquant.mlx.load_gguf builds float32 models): quantized parameters are widened to float32 before
use (float16 ones exactly), blocks are decoded to float32; the output is float32.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from . import metal
from .weights import GGUFWeight, dequantize_weight

_META = ("qtype", "rows", "cols", "form", "bits", "group_size", "mode")


class _GGUFModule(nn.Module):
    """Holds one :class:`~.weights.GGUFWeight`: its arrays as module parameters (so mlx-lm sees
    and counts them), its type and geometry as plain attributes."""

    def __init__(self, w: GGUFWeight):
        super().__init__()
        for k in _META:
            setattr(self, k, getattr(w, k))
        for k, a in w.arrays.items():
            self[k] = a
        self.freeze()

    def gguf_weight(self) -> GGUFWeight:
        names = ("weight", "scales", "biases", "blocks")
        arrays = {k: self[k] for k in names if k in self}
        return GGUFWeight(self.qtype, self.rows, self.cols, self.form, arrays, self.bits,
                          self.group_size, self.mode)

    def _matmul(self, x: mx.array) -> mx.array:
        """``x @ W.T`` for x of shape (..., cols) -> (..., rows)."""
        if self.form == "quantized":
            return mx.quantized_matmul(x, self["weight"], self["scales"], self.get("biases"),
                                       transpose=True, group_size=self.group_size, bits=self.bits,
                                       mode=self.mode)
        if self.form == "float":
            return x @ self["weight"].T
        if metal.available():
            return metal.matmul(self.qtype, self["blocks"], x, self.rows, self.cols)
        w = dequantize_weight(self.gguf_weight())                      # (rows, cols) f32
        return x @ w.T

    def _extra_repr(self) -> str:
        return f"{self.qtype}, rows={self.rows}, cols={self.cols}, form={self.form}"


class GGUFLinear(_GGUFModule):
    """``nn.Linear`` over a GGUF weight (``rows`` outputs, ``cols`` inputs), optional float bias."""

    def __init__(self, w: GGUFWeight, bias: mx.array | None = None):
        super().__init__(w)
        if bias is not None:
            self.bias = bias

    def __call__(self, x: mx.array) -> mx.array:
        y = self._matmul(x)
        return y + self["bias"] if "bias" in self else y


class GGUFEmbedding(_GGUFModule):
    """``nn.Embedding`` over a GGUF weight: only the looked-up rows are decoded; ``as_linear``
    serves a tied output head."""

    def __call__(self, ids: mx.array) -> mx.array:
        return dequantize_weight(self.gguf_weight(), ids)

    def as_linear(self, x: mx.array) -> mx.array:
        return self._matmul(x)
