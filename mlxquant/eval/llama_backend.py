"""llama.cpp (through llama-cpp-python) as an evaluation backend: logits of a GGUF file as llama.cpp
computes them, including its activation quantization on quantized weights, so that ``mlxquant
eval --backend llama.cpp`` measures what llama.cpp users will see.

The KV cache is kept in float32 (``type_k = type_v = 0``); f16 would add ~3e-3 of noise (FIELD-NOTES).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MlxquantError


class LlamaCppUnavailable(MlxquantError, RuntimeError):
    """llama-cpp-python is not installed, or the file is not a GGUF it can load."""


class LlamaCppModel:
    """A GGUF model run by llama.cpp. ``forward(tokens, logits_from)`` evaluates ``tokens`` from an
    empty context and returns float32 logits ``(len(tokens) - logits_from, vocab)``."""

    backend = "llama.cpp"

    def __init__(self, path: str | os.PathLike, n_ctx: int = 512, threads: int | None = None):
        try:
            import llama_cpp
        except ImportError:
            raise LlamaCppUnavailable("the llama.cpp backend needs llama-cpp-python "
                                      "(pip install llama-cpp-python)") from None
        p = Path(path)
        if not p.is_file():
            raise LlamaCppUnavailable(f"{p}: the llama.cpp backend runs GGUF files only")
        threads = threads or max(1, min(2, os.cpu_count() or 1))
        try:
            self._llm = llama_cpp.Llama(model_path=str(p), logits_all=True, n_ctx=int(n_ctx),
                                        n_batch=int(n_ctx), n_threads=threads,
                                        n_threads_batch=threads, type_k=0, type_v=0, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise LlamaCppUnavailable(f"{p}: llama.cpp cannot load it: {e}") from None
        self.path = p
        self.n_ctx = int(n_ctx)
        self.vocab = int(self._llm.n_vocab())

    def new_cache(self, capacity: int = 256) -> Any:
        return None

    def forward(self, tokens: Any, cache: Any = None, logits_from: int = 0) -> np.ndarray:
        toks = [int(t) for t in np.asarray(tokens).reshape(-1)]
        if len(toks) > self.n_ctx:
            raise ValueError(f"{len(toks)} tokens exceed llama.cpp's context of {self.n_ctx}")
        self._llm.reset()
        self._llm.eval(toks)
        return np.array(self._llm.scores[logits_from:len(toks)], dtype=np.float32)

    def close(self) -> None:
        self._llm.close()
