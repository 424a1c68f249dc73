"""Running models: a NumPy float32 forward pass for CPUs (llama, qwen2, qwen3, gemma2, gemma3, any
format mlxquant reads), mlx-lm's model classes on Apple GPUs, KV cache, sampling and generation."""

from .backend import BACKENDS, BackendError, load_model, resolve_backend
from .generate import Generation, generate, generate_tokens, sample
from .numpy_model import KVCache, NumpyModel
from .spec import ModelSpec, model_spec
from .weights import Weights, open_weights

__all__ = [
    "BACKENDS", "BackendError", "load_model", "resolve_backend", "Generation", "generate",
    "generate_tokens", "sample", "KVCache", "NumpyModel", "ModelSpec", "model_spec", "Weights",
    "open_weights",
]
