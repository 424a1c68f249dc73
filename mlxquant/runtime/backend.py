"""Open a model on a backend: NumPy (any CPU, any format mlxquant reads) or MLX (mlx-lm's model
classes, for Apple GPUs; folders only).

``backend="auto"`` picks MLX only when MLX's default device is a GPU: on a CPU, MLX's matmul is ~30x
slower than NumPy's BLAS (FIELD-NOTES), so NumPy wins there.

``backend="mlx"`` asked for on a machine without an MLX GPU still runs (it is how MLX output is
checked on Linux), but widened to float32 as the main job does, with a warning: MLX's float16
matmuls on a CPU are ~30x slower than its float32 ones (measured here on SmolLM2, 2 cores:
0.08 tok/s in float16, 2.5 tok/s in float32; the NumPy backend makes ~18 tok/s). float16 values
widen exactly, so only the compute precision changes.

MLX evaluates outside the GIL and never looks at Python's signals, so one long ``mx.eval`` (a
prompt on a CPU takes seconds to minutes) would hold Ctrl-C until it ends. :class:`MlxModel` does
its MLX work on a worker thread (:class:`MlxThread`) and waits in short slices, so
KeyboardInterrupt reaches the caller within ~0.1 s; the abandoned evaluation dies with the process.

Both backends expose the same small interface, :class:`RunnableModel`: ``forward(tokens, cache,
logits_from) -> float32 logits``, ``new_cache()``, ``tokenizer``, ``spec``, ``weights``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Protocol

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
    try:
        return mx.default_device().type == mx.DeviceType.gpu
    except Exception:  # a broken GPU runtime must not break the CPU path
        return False


def resolve_backend(backend: str) -> str:
    """``"numpy"`` or ``"mlx"`` for ``"auto" | "numpy" | "mlx"``."""
    b = backend.lower()
    if b not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if b == "auto":
        return "mlx" if mlx_on_gpu() else "numpy"
    return b


class MlxThread:
    """One daemon thread that does all of a model's MLX work (MLX streams belong to the thread
    that builds a graph, so loading, forward passes and evaluation all happen there).
    :meth:`call` waits in ``poll``-second slices, so KeyboardInterrupt reaches the caller within
    ~0.1 s even while an evaluation runs; the abandoned work ends with the process."""

    def __init__(self, poll: float = 0.1):
        self.poll = poll
        self._jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._serve, name="mlx", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, box, done = job
            try:
                box.append((True, fn()))
            except BaseException as e:  # handed to the caller's thread
                box.append((False, e))
            done.set()

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the MLX thread; its result, or its exception re-raised here."""
        box: list = []
        done = threading.Event()
        self._jobs.put((fn, box, done))
        while not done.wait(self.poll):
            pass
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """End the thread after the work queued so far."""
        self._jobs.put(None)


class MlxModel:
    """An mlx-lm model (HF or MLX folder) behind the runtime's interface. Logits come back as
    float32 NumPy arrays; the cache is mlx-lm's prompt cache. Without an MLX GPU the model's
    float tensors (weights, scales, biases) are widened to float32 (``dtype``)."""

    backend = "mlx"

    def __init__(self, weights: Weights, spec: ModelSpec, tokenizer: Tokenizer | None):
        self.weights, self.spec, self.tokenizer = weights, spec, tokenizer
        self.dtype = "as stored" if mlx_on_gpu() else "float32"
        self._thread = MlxThread()
        self.model = self._thread.call(self._load)
        if self.dtype == "float32":
            log.warning("MLX has no GPU here: running %s in float32 on the CPU (float16 would be ~30x "
                        "slower; --backend numpy is faster still)", weights.path)

    def __del__(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.stop()

    def _load(self) -> Any:
        import mlx.core as mx
        from mlx_lm.utils import load_model

        model, _ = load_model(Path(self.weights.path))
        if self.dtype == "float32":
            model.set_dtype(mx.float32)
            mx.eval(model.parameters())
        return model

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on this model's MLX thread (for work on ``self.model`` besides :meth:`forward`)."""
        return self._thread.call(fn)

    def new_cache(self, capacity: int = 256) -> Any:
        from mlx_lm.models.cache import make_prompt_cache

        return self._thread.call(lambda: make_prompt_cache(self.model))

    def forward(self, tokens: Any, cache: Any = None, logits_from: int = 0) -> np.ndarray:
        ids = np.asarray(tokens, dtype=np.int32).reshape(1, -1)

        def run() -> np.ndarray:
            import mlx.core as mx

            toks = mx.array(ids)
            out = self.model(toks) if cache is None else self.model(toks, cache=cache)
            out = out[0, logits_from:].astype(mx.float32)
            mx.eval(out)
            return np.array(out)

        return self._thread.call(run)


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
