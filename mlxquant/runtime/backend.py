"""Open a model on a backend: NumPy (any CPU, any format mlxquant reads) or MLX (mlx-lm's model
classes, for Apple GPUs; folders only).

``backend="auto"`` picks MLX only when MLX's default device is a GPU: on a CPU, MLX's matmul is ~30x
slower than NumPy's BLAS (FIELD-NOTES), so NumPy wins there.

Both backends expose the same small interface, :class:`RunnableModel`: ``forward(tokens, cache,
logits_from) -> float32 logits``, ``new_cache()``, ``tokenizer``, ``spec``, ``weights``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import MlxquantError
from .numpy_model import NumpyModel
from .spec import ModelSpec, model_spec
from .tokenize import Tokenizer, load_tokenizer
from .weights import Weights, open_weights

log = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "mlx")


class BackendError(MlxquantError, ValueError):
    """A backend that cannot run this model here (e.g. MLX on a GGUF file)."""


class RunnableModel(Protocol):
    spec: ModelSpec
    weights: Weights
    tokenizer: Tokenizer | None
    backend: str

    def new_cache(self, capacity: int = 256) -> Any: ...

    def forward(self, tokens: Any, cache: Any = None, logits_from: int = 0) -> np.ndarray: ...


def mlx_on_gpu() -> bool:
    """True when MLX is installed and its default device is a GPU."""
    try:
        import mlx.core as mx
    except ImportError:
        return False
    return mx.default_device().type == mx.DeviceType.gpu


def resolve_backend(backend: str) -> str:
    """``"numpy"`` or ``"mlx"`` for ``"auto" | "numpy" | "mlx"``."""
    b = backend.lower()
    if b not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if b == "auto":
        return "mlx" if mlx_on_gpu() else "numpy"
    return b


class MlxModel:
    """An mlx-lm model (HF or MLX folder) behind the runtime's interface. Logits come back as
    float32 NumPy arrays; the cache is mlx-lm's prompt cache."""

    backend = "mlx"

    def __init__(self, weights: Weights, spec: ModelSpec, tokenizer: Tokenizer | None):
        from mlx_lm.utils import load_model

        self.weights, self.spec, self.tokenizer = weights, spec, tokenizer
        self.model, _ = load_model(Path(weights.path))

    def new_cache(self, capacity: int = 256) -> Any:
        from mlx_lm.models.cache import make_prompt_cache

        return make_prompt_cache(self.model)

    def forward(self, tokens: Any, cache: Any = None, logits_from: int = 0) -> np.ndarray:
        import mlx.core as mx

        toks = mx.array(np.asarray(tokens, dtype=np.int32).reshape(1, -1))
        out = self.model(toks) if cache is None else self.model(toks, cache=cache)
        out = out[0, logits_from:].astype(mx.float32)
        mx.eval(out)
        return np.array(out)


def load_model(path: str | os.PathLike, backend: str = "auto", budget: int | None = None,
               tokenizer: bool = True, batch: int = 512) -> RunnableModel:
    """Open ``path`` for running.

    Args:
        path: GGUF file, Hugging Face folder or MLX folder.
        backend: ``"auto"`` (default), ``"numpy"`` or ``"mlx"``.
        budget: NumPy backend: bytes of decoded float32 weights kept in memory (default half the
            available memory; the rest is decoded per layer on each use).
        tokenizer: load the tokenizer too (default True; a missing one is then an error).
        batch: NumPy backend: tokens per forward batch (default 512).

    Raises:
        FileNotFoundError, FormatError, TokenizerError, UnsupportedArchitectureError, BackendError.
    """
    weights = open_weights(path, budget)
    spec = model_spec(weights.arch.name, weights.config, "lm_head.weight" not in weights)
    tok = load_tokenizer(weights.path, weights.config, weights.metadata) if tokenizer else None
    if tok is not None:
        spec.bos_token_id = spec.bos_token_id if spec.bos_token_id is not None else tok.bos_token_id
        spec.eos_token_ids = spec.eos_token_ids or list(tok.eos_token_ids)
    which = resolve_backend(backend)
    if which == "mlx":
        if weights.format == "gguf":
            raise BackendError(f"{weights.path}: the MLX backend runs HF/MLX folders (mlx-lm), not "
                               "GGUF files; use --backend numpy")
        return MlxModel(weights, spec, tok)
    return NumpyModel(weights, spec, batch, tok)
