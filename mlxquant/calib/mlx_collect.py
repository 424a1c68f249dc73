"""The imatrix statistics from an mlx-lm model (``imatrix(..., backend="mlx")``).

The model is opened as the runtime opens MLX models (:class:`mlxquant.runtime.backend.MlxModel`:
mlx-lm's classes, HF and MLX folders, widened to float32 on a machine without an MLX GPU). mlx-lm
does not read GGUF files (and ``mx.load``'s GGUF reader is wrong for some types, FIELD-NOTES), so
a GGUF source is first converted to a float32 Hugging Face folder in a temporary directory
(``mlxquant convert --to hf --outtype F32``: the dequantized values the NumPy runtime uses too;
4 bytes per weight of temporary disk, removed at the end), and tokenized from the GGUF itself. Each
linear layer whose weight llama.cpp's imatrix collects — ``nn.Linear`` or ``nn.QuantizedLinear``
under ``model.layers`` (``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q.weight`` through
mlxquant's architecture maps), and ``lm_head`` with ``process_output`` — is replaced by a
:class:`_Tap` that adds ``sum(x**2)`` over the tokens (float32, on the device) and counts the rows
before calling the original layer. Chunks run as the NumPy path runs them (same tokens, BOS rule,
batches of 512 through mlx-lm's KV cache, batches under 16 tokens not collected); after every
chunk the sums are evaluated and moved to NumPy, and the shared loop in
:mod:`mlxquant.calib.collect` adds them up.

The sums are reduced by MLX (its order, not llama-imatrix's row-by-row one) and the activations
come from another engine, so they agree with the NumPy runtime's within float tolerance (measured
on the float base model in tests/test_imatrix_mlx.py), not bit for bit. All MLX work happens on the
model's MLX thread (:meth:`MlxModel.call`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

log = logging.getLogger(__name__)


class _Acc:
    """A tap's running sums for the current chunk (a plain object: mlx's Module would take an
    ``mx.array`` attribute for a parameter)."""

    def __init__(self) -> None:
        self.sums: Any = None  # mx.array float32 (in_features,)
        self.rows = 0


def _tap_class(min_ctx: int) -> type:
    import mlx.core as mx
    import mlx.nn as nn

    class _Tap(nn.Module):
        """Records ``sum(x**2, tokens)`` and the token count of the input, then calls ``inner``."""

        def __init__(self, inner: nn.Module, name: str):
            super().__init__()
            self.inner = inner
            self.gguf_name = name
            self.acc = _Acc()

        def __call__(self, x: Any) -> Any:
            rows = int(np.prod(x.shape[:-1]))
            if rows >= min_ctx:  # llama-imatrix ignores smaller batches
                sq = mx.square(x.astype(mx.float32)).reshape(rows, x.shape[-1]).sum(axis=0)
                a = self.acc
                a.sums = sq if a.sums is None else a.sums + sq
                a.rows += rows
            return self.inner(x)

    return _Tap


def _parent(root: Any, path: list[str]) -> Any:
    obj = root
    for part in path:
        obj = obj[int(part)] if isinstance(obj, list) else getattr(obj, part)
    return obj


class MlxRunner:
    """An mlx-lm model with taps, run one chunk at a time (see the module docstring): chunks of
    ``ctx`` tokens in batches of ``ubatch``, batches under ``min_ctx`` tokens not collected
    (:mod:`mlxquant.calib.collect` passes llama-imatrix's 512 and 16).

    Raises:
        FormatError, TokenizerError, UnsupportedArchitectureError (also from the conversion of a
        GGUF source); ImportError without mlx-lm.
    """

    backend = "mlx"

    def __init__(self, model: str | os.PathLike, ctx: int, process_output: bool, ubatch: int = 512,
                 min_ctx: int = 16):
        from ..runtime.backend import load_model
        from ..runtime.tokenize import load_tokenizer
        from ..runtime.weights import open_weights

        self._tmp: tempfile.TemporaryDirectory | None = None
        src = open_weights(model)
        if src.format == "gguf":
            from ..convert import HFOptions, convert

            self._tmp = tempfile.TemporaryDirectory(prefix="mlxquant-imatrix-")
            folder = Path(self._tmp.name) / "model"
            log.info("converting %s to a float32 HF folder for mlx-lm (%s)", src.path, folder)
            convert(model, folder, HFOptions(outtype="F32"))
            self.m = load_model(folder, backend="mlx", tokenizer=False)
            self.tokenizer = load_tokenizer(src.path, src.config, src.metadata)
        else:
            self.m = load_model(model, backend="mlx")
            self.tokenizer = self.m.tokenizer
        self.path, self.ctx = src.path, ctx
        self.ubatch, self.min_ctx = ubatch, min_ctx
        self.taps: list[Any] = self.m.call(lambda: self._install(process_output))

    def _install(self, process_output: bool) -> list[Any]:
        import mlx.nn as nn
        from mlx.utils import tree_flatten

        w = self.m.weights
        Tap = _tap_class(self.min_ctx)
        taps = []
        leaves = tree_flatten(self.m.model.leaf_modules(), is_leaf=lambda v: isinstance(v, nn.Module))
        for path, mod in leaves:
            if not isinstance(mod, (nn.Linear, nn.QuantizedLinear)):
                continue
            g = w.arch.tensor_name_to_gguf(path + ".weight", w.config)
            if g is None or not (g.startswith("blk.") or (process_output and g == "output.weight")):
                continue
            parts = path.split(".")
            tap = Tap(mod, g)
            setattr(_parent(self.m.model, parts[:-1]), parts[-1], tap)
            taps.append(tap)
        return taps

    def close(self) -> None:
        """Remove the temporary folder of a GGUF source (if any)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def chunks(self, windows: list[np.ndarray], first: int,
               score: Callable[[np.ndarray, np.ndarray], float]) -> Iterator[tuple[float, list]]:
        """``(score(logits, window), sums)`` of every window (:meth:`chunk`), in order, one at a
        time (MLX uses the device's own parallelism)."""
        for w in windows:
            logits, sums = self.chunk(w, first)
            yield score(logits, w), sums

    def chunk(self, w: np.ndarray, first: int) -> tuple[np.ndarray, list[tuple[str, np.ndarray, int]]]:
        """Run one chunk: logits of positions ``first..`` ``(len(w) - first, vocab)`` float32 and
        the chunk's ``(name, float32 sums, rows)``."""
        ids = np.asarray(w, np.int32).reshape(1, -1)

        def run() -> tuple[np.ndarray, list[tuple[str, np.ndarray, int]]]:
            import mlx.core as mx
            from mlx_lm.models.cache import make_prompt_cache

            for t in self.taps:
                t.acc = _Acc()
            cache = make_prompt_cache(self.m.model)
            outs = []
            for b0 in range(0, ids.shape[1], self.ubatch):  # llama.cpp's physical batches
                part = ids[:, b0:b0 + self.ubatch]
                logits = self.m.model(mx.array(part), cache=cache)[0, max(0, first - b0):]
                logits = logits.astype(mx.float32)
                mx.eval(logits, *[t.acc.sums for t in self.taps if t.acc.sums is not None])
                if logits.shape[0]:
                    outs.append(np.array(logits))
            sums = [(t.gguf_name, np.array(t.acc.sums), t.acc.rows)
                    for t in self.taps if t.acc.sums is not None]
            return np.concatenate(outs, axis=0), sums

        return self.m.call(run)
