"""``mlxquant eval``: perplexity of a model and its divergence from a reference, over windows of text.

The text is tokenized once (the reference's tokenizer, else the model's; special tokens as the
tokenizer config says, as ``llama-perplexity`` does), cut into ``chunks`` windows of ``ctx`` tokens;
the first token of each window becomes BOS when the tokenizer adds one. In each window the positions
``ctx/2 .. ctx-2`` are scored, each predicting the next token (llama.cpp's ``first = n_ctx/2``),
so every scored token has at least ``ctx/2`` tokens of context. Statistics: :mod:`.metrics`.

Backends: ``numpy`` (mlxquant's runtime, any format), ``mlx`` (mlx-lm, folders), ``llama.cpp``
(llama-cpp-python, GGUF files: what llama.cpp users see, activation quantization included).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import MlxquantError
from ..runtime.backend import load_model
from ..runtime.tokenize import Tokenizer
from .metrics import Metrics, TokenScores, log_softmax

log = logging.getLogger(__name__)

EVAL_BACKENDS = ("numpy", "mlx", "llama.cpp")
Progress = Callable[[int, int, str], None]
"""``progress(done, total, label)`` after each window."""


class EvalError(MlxquantError, ValueError):
    """Input that cannot be evaluated: too little text, mismatched vocabularies."""


@dataclass
class EvalModel:
    """A model opened for evaluation: ``logits(window, first)`` -> ``(len - 1 - first, vocab)``."""

    path: Path
    backend: str
    vocab: int
    tokenizer: Tokenizer | None
    file_bytes: int
    bits_per_weight: float
    parameters: int
    runner: Any

    def logits(self, window: np.ndarray, first: int) -> np.ndarray:
        out = self.runner.forward(window, None, logits_from=first)
        return out[:-1]


def open_for_eval(path: str | os.PathLike, backend: str = "numpy", ctx: int = 512,
                  budget: int | None = None) -> EvalModel:
    """Open ``path`` for :func:`evaluate` on ``backend`` (see module docstring).

    Raises:
        FileNotFoundError, FormatError, UnsupportedArchitectureError, TokenizerError,
        BackendError / LlamaCppUnavailable.
    """
    b = backend.lower()
    if b not in EVAL_BACKENDS:
        raise EvalError(f"unknown backend {backend!r} (choose from {', '.join(EVAL_BACKENDS)})")
    if b == "llama.cpp":
        from ..runtime.spec import model_spec
        from ..runtime.tokenize import load_tokenizer
        from ..runtime.weights import open_weights
        from .llama_backend import LlamaCppModel

        w = open_weights(path, budget=0)
        model_spec(w.arch.name, w.config, "lm_head.weight" not in w)  # architecture check
        runner = LlamaCppModel(path, n_ctx=ctx)
        tok = load_tokenizer(w.path, w.config, w.metadata)
        return EvalModel(w.path, b, runner.vocab, tok, w.file_bytes, w.bits_per_weight, w.parameters, runner)
    m = load_model(path, backend=b, budget=budget, batch=ctx)
    w = m.weights
    vocab = m.spec.vocab
    return EvalModel(w.path, m.backend, vocab, m.tokenizer, w.file_bytes, w.bits_per_weight, w.parameters, m)


def make_windows(tokens: list[int], ctx: int, chunks: int | None, bos: int | None) -> list[np.ndarray]:
    """``min(chunks, len(tokens) // ctx)`` windows of ``ctx`` tokens, BOS first when given."""
    if ctx < 4:
        raise EvalError(f"context of {ctx} tokens is too short (at least 4)")
    n = len(tokens) // ctx
    if n == 0:
        raise EvalError(f"the text tokenizes to {len(tokens)} tokens, fewer than one window of {ctx} "
                        "(use more text or a smaller --ctx)")
    if chunks is not None:
        if chunks < 1:
            raise EvalError(f"chunks must be at least 1, not {chunks}")
        n = min(n, chunks)
    out = []
    for i in range(n):
        w = np.asarray(tokens[i * ctx:(i + 1) * ctx], dtype=np.int64)
        if bos is not None:
            w[0] = bos
        out.append(w)
    return out


def check_same_vocabulary(model: EvalModel, reference: EvalModel) -> None:
    """Raise EvalError unless both models have the same vocabulary."""
    if model.vocab != reference.vocab:
        raise EvalError(f"{model.path} has a vocabulary of {model.vocab} tokens, the reference "
                        f"{reference.path} {reference.vocab}: KLD needs the same vocabulary")
    if model.tokenizer is not None and reference.tokenizer is not None:
        a, b = model.tokenizer.vocabulary(), reference.tokenizer.vocabulary()
        if a != b:
            diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise EvalError(f"{model.path} and the reference {reference.path} tokenize differently "
                            f"(first differing token id {diff})")


@dataclass
class EvalReport:
    """What :func:`evaluate` measured."""

    model: str
    reference: str | None
    backend: str
    ctx: int
    chunks: int
    scored_tokens: int
    text_tokens: int
    file_bytes: int
    bits_per_weight: float
    parameters: int
    seconds: float
    metrics: Metrics = field(default_factory=Metrics)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_tokens(text: str, tokenizer: Tokenizer, ctx: int, chunks: int | None) -> tuple[list[np.ndarray], int]:
    """The evaluation windows of ``text`` and the text's token count."""
    if not text.strip():
        raise EvalError("the evaluation text is empty")
    ids = tokenizer.encode(text, add_special=True)
    bos = tokenizer.bos_token_id if ids and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id else None
    return make_windows(ids, ctx, chunks, bos), len(ids)


def reference_logits(reference: EvalModel, windows: Iterable[np.ndarray], first: int,
                     progress: Progress | None = None) -> list[np.ndarray]:
    """The reference's scored logits per window (float32), for reuse across models (sweeps)."""
    wins = list(windows)
    out = []
    for i, w in enumerate(wins):
        out.append(reference.logits(w, first))
        if progress is not None:
            progress(i + 1, len(wins), f"reference window {i + 1}")
    return out


def score(model: EvalModel, windows: list[np.ndarray], first: int,
          ref_logits: list[np.ndarray] | Callable[[int], np.ndarray] | None = None,
          progress: Progress | None = None) -> Metrics:
    """Metrics of ``model`` over ``windows`` against precomputed reference logits (or none)."""
    scores = TokenScores()
    for i, w in enumerate(windows):
        lg = model.logits(w, first)
        base = None
        if ref_logits is not None:
            rl = ref_logits(i) if callable(ref_logits) else ref_logits[i]
            base = log_softmax(rl)
        scores.add(lg, w[first + 1:], base)
        if progress is not None:
            progress(i + 1, len(windows), f"window {i + 1}")
    return scores.summary()


def evaluate(model: str | os.PathLike, text: str, reference: str | os.PathLike | None = None,
             ctx: int = 512, chunks: int | None = None, backend: str = "numpy",
             progress: Progress | None = None, budget: int | None = None) -> EvalReport:
    """Perplexity of ``model`` over ``text`` and, with a ``reference``, its KL divergence from it.

    Args:
        model: GGUF file, HF folder or MLX folder.
        text: the evaluation text (at least one window of ``ctx`` tokens).
        reference: the base model (same vocabulary), or None for perplexity only.
        ctx: window length in tokens (default 512); the second half of each window is scored.
        chunks: at most this many windows (default: as many as the text holds).
        backend: ``"numpy"`` (default), ``"mlx"`` or ``"llama.cpp"``, for both models.
        progress: ``progress(done, total, label)`` per window.
        budget: NumPy backend memory budget per model, bytes (see :func:`load_model`).

    Raises:
        EvalError (too little text, other vocabulary), FormatError, UnsupportedArchitectureError,
        TokenizerError, FileNotFoundError, LlamaCppUnavailable.
    """
    t0 = time.perf_counter()
    m = open_for_eval(model, backend, ctx, budget)
    ref = open_for_eval(reference, backend, ctx, budget) if reference is not None else None
    if ref is not None:
        check_same_vocabulary(m, ref)
    tok = (ref or m).tokenizer
    if tok is None:
        raise EvalError(f"{(ref or m).path}: no tokenizer to tokenize the text with")
    windows, n_text = window_tokens(text, tok, ctx, chunks)
    first = ctx // 2
    total = len(windows)

    def ref_for(i: int) -> np.ndarray:
        return ref.logits(windows[i], first)  # type: ignore[union-attr]

    metrics = score(m, windows, first, ref_for if ref is not None else None,
                    (lambda d, n, label: progress(d, total, label)) if progress else None)
    report = EvalReport(str(m.path), str(ref.path) if ref else None, m.backend, ctx, total,
                        metrics.count, n_text, m.file_bytes, round(m.bits_per_weight, 4),
                        m.parameters, round(time.perf_counter() - t0, 3), metrics)
    log.info("evaluated %s: PPL %.4f over %d tokens (%d windows of %d)", m.path, metrics.ppl or 0,
             metrics.count, total, ctx)
    return report
