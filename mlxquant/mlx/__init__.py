"""GGUF models on MLX without requantizing: mlx-lm layers that keep each tensor's GGUF type.

``load_gguf(path) -> (model, tokenizer)`` builds mlx-lm's model for the file's architecture with
:class:`GGUFLinear` / :class:`GGUFEmbedding` layers (:mod:`.layers`); how each type is held is in
:mod:`.weights`, the Metal kernels for the types MLX has no quantized matmul for in :mod:`.metal`.
"""

from .layers import GGUFEmbedding, GGUFLinear
from .load import load_gguf, model_nbytes
from .weights import GGUFWeight, dequantize_weight, plan_weight

__all__ = ["GGUFEmbedding", "GGUFLinear", "GGUFWeight", "dequantize_weight", "load_gguf",
           "model_nbytes", "plan_weight"]
