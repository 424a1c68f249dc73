"""Sampling and generation over any :class:`~mlxquant.runtime.backend.RunnableModel`.

:func:`generate` feeds the prompt once (prefill), then one token at a time through the KV cache,
stopping at ``max_tokens`` or an end-of-sequence token (any of the model's EOS / end-of-turn ids,
:func:`stop_token_ids`). The stop token is not part of the result: it is neither streamed, nor in
``tokens`` / ``text``, nor counted in tokens per second. Greedy when ``temperature == 0`` (the
default); otherwise softmax sampling at that temperature, optionally restricted to the smallest
set of tokens whose probability reaches ``top_p``, with a seeded generator. Timings are recorded
for :mod:`mlxquant.eval.bench`. On the NumPy backend the prefill and each decode step run with
the BLAS thread count that the model's :class:`~mlxquant.runtime.blas.ThreadChooser` finds fastest
(1 on a loaded machine: multi-threaded OpenBLAS then stalls, see :mod:`mlxquant.runtime.blas`),
set when the choice changes and restored once at the end of the generation
(:func:`~mlxquant.runtime.blas.thread_session`).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .blas import ThreadChooser, thread_session
from .memory import trim

# GGUF keys of end-of-turn tokens that end a generation like EOS (llama.cpp's llama_vocab_is_eog)
_GGUF_EOG_KEYS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


def _ints(v: Any) -> list[int]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return [int(v)]
    return [int(x) for x in v if isinstance(x, (int, np.integer))] if isinstance(v, list) else []


def stop_token_ids(model: object) -> list[int]:
    """Every id that ends a generation: the model's EOS ids (config / tokenizer), a GGUF's
    EOT/EOM ids and a folder's generation_config.json ``eos_token_id`` (e.g. Gemma's
    ``<end_of_turn>``, Llama 3's ``<|eot_id|>``)."""
    ids = list(getattr(model.spec, "eos_token_ids", None) or [])  # type: ignore[attr-defined]
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        ids += list(tok.eos_token_ids or [])
    w = getattr(model, "weights", None)
    meta = getattr(w, "metadata", None) or {}
    for key in _GGUF_EOG_KEYS:
        ids += _ints(meta.get(key))
    path = getattr(w, "path", None)
    if path is not None and Path(path).is_dir() and (Path(path) / "generation_config.json").is_file():
        try:
            gc = json.loads((Path(path) / "generation_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            gc = None
        if isinstance(gc, dict):
            ids += _ints(gc.get("eos_token_id"))
    return list(dict.fromkeys(ids))


def sample(logits: np.ndarray, temperature: float = 0.0, top_p: float = 1.0,
           rng: np.random.Generator | None = None) -> int:
    """One token id from a ``(vocab,)`` logit vector (greedy when ``temperature <= 0``)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.choice(len(p), p=p))


@dataclass
class Generation:
    """What :func:`generate` produced, with timings (seconds)."""

    prompt_tokens: list[int]
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    stopped_by: str = "max_tokens"  # or "eos" (the stop token is not in ``tokens``)
    blas_threads: str = ""  # NumPy backend: measured ms/token by BLAS thread count

    @property
    def prompt_tps(self) -> float:
        """Prompt tokens per second."""
        return len(self.prompt_tokens) / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        """Generated tokens per second, after the first (which the prefill produces)."""
        n = len(self.tokens) - 1
        return n / self.decode_seconds if n > 0 and self.decode_seconds > 0 else 0.0


def generate_tokens(model: object, prompt: Sequence[int], max_tokens: int = 64, temperature: float = 0.0,
                    top_p: float = 1.0, seed: int | None = None, stop_at_eos: bool = True,
                    on_token: Callable[[int], None] | None = None) -> Generation:
    """Generate up to ``max_tokens`` ids after ``prompt`` (ids) with ``model``.

    ``on_token(id)`` is called as each token is chosen (for streaming); a stop token
    (:func:`stop_token_ids`, when ``stop_at_eos``) ends the generation without being passed on,
    kept or timed. Ctrl-C (KeyboardInterrupt) is answered between tokens."""
    if not prompt:
        raise ValueError("generation needs a non-empty prompt")
    rng = np.random.default_rng(seed)
    eos = set(stop_token_ids(model)) if stop_at_eos else set()
    cache = model.new_cache(len(prompt) + max_tokens)  # type: ignore[attr-defined]
    gen = Generation(list(prompt))
    if max_tokens <= 0:
        return gen
    choosers = getattr(model, "blas_threads", None)  # NumPy backend: {"prefill": .., "decode": ..}
    if max_tokens > 1 and hasattr(model, "prepare_decode"):
        model.prepare_decode()  # the decode step's compiled code, before the prompt's weights
    with thread_session() if choosers else contextlib.nullcontext():
        _generate(model, prompt, max_tokens, temperature, top_p, rng, eos, cache, gen, choosers, on_token)
    if choosers:
        del cache
        trim()  # the prompt's freed activations back to the OS (runtime/memory.py)
        gen.blas_threads = f"prefill: {choosers['prefill'].summary()}; decode: {choosers['decode'].summary()}"
    return gen


def _generate(model: Any, prompt: Sequence[int], max_tokens: int, temperature: float, top_p: float,
              rng: np.random.Generator, eos: set[int], cache: Any, gen: Generation,
              choosers: dict[str, ThreadChooser] | None, on_token: Callable[[int], None] | None) -> None:
    """The prefill and decode loop of :func:`generate_tokens` (filling ``gen``)."""
    t0 = time.perf_counter()
    with choosers["prefill"].step(len(prompt)) if choosers else contextlib.nullcontext():
        logits = model.forward(list(prompt), cache, logits_from=len(prompt) - 1)[-1]  # type: ignore[attr-defined]
    tok = sample(logits, temperature, top_p, rng)
    gen.prefill_seconds = time.perf_counter() - t0
    t1 = last = time.perf_counter()
    while True:
        if tok in eos:  # the forward pass that chose it is not counted either
            gen.stopped_by = "eos"
            break
        gen.tokens.append(tok)
        last = time.perf_counter()
        if on_token is not None:
            on_token(tok)
        if len(gen.tokens) >= max_tokens:
            break
        with choosers["decode"].step() if choosers else contextlib.nullcontext():
            logits = model.forward([tok], cache)[-1]  # type: ignore[attr-defined]
        tok = sample(logits, temperature, top_p, rng)
    gen.decode_seconds = last - t1


def generate(model: object, prompt: str, max_tokens: int = 64, temperature: float = 0.0,
             top_p: float = 1.0, seed: int | None = None,
             on_text: Callable[[str], None] | None = None, add_special: bool = True) -> Generation:
    """Generate text after ``prompt`` (tokenized with the model's tokenizer, special tokens such
    as BOS added as the tokenizer config says, unless ``add_special`` is False: a prompt rendered
    by a chat template carries its own). ``on_text(piece)`` streams the decoded text."""
    tok = model.tokenizer  # type: ignore[attr-defined]
    if tok is None:
        raise ValueError("this model was loaded without a tokenizer")
    ids = tok.encode(prompt, add_special=add_special)
    shown = [""]

    def stream(_: int) -> None:
        if on_text is None:
            return
        text = tok.decode(gen_tokens)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            on_text(text[len(shown[0]):])
            shown[0] = text

    gen_tokens: list[int] = []

    def collect(t: int) -> None:
        gen_tokens.append(t)
        stream(t)

    gen = generate_tokens(model, ids, max_tokens, temperature, top_p, seed, on_token=collect)
    gen.text = tok.decode(gen.tokens)
    if on_text is not None and len(gen.text) > len(shown[0]):
        on_text(gen.text[len(shown[0]):])
    return gen
