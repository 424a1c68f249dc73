"""One model behind the server: prompts, and generations run one at a time on worker threads.

Facts this relies on:

- :func:`mlxquant.runtime.generate.generate_tokens` gives every call its own KV cache and calls
  ``on_token`` between tokens; an exception raised there ends the loop at once. That is how a
  cancelled request (client gone) and a stop string end a generation here, so the server's
  tokens are exactly ``mlxquant generate``'s (same prompt, same sampler, same stop tokens).
- The NumPy model is not safe for two forward passes at once (shared BLAS thread chooser,
  decoded-weight budget), and on a CPU two at once would only share the cores: generations are
  serialized, first come first served (:class:`Turns`); the others wait in a queue of bounded
  length (:class:`Busy` beyond it). A request cancelled while it waits never starts.
- The runtime's :class:`~mlxquant.runtime.blas.ThreadChooser` sets OpenBLAS's thread count when
  its choice changes and restores it once per generation (:func:`~mlxquant.runtime.blas.thread_session`).
  When it set and restored the count around every forward pass, each raise made OpenBLAS wake a
  worker that spins, and a generation on a worker thread cost 3-4x the CPU of one on the main
  thread, so the engine pinned OpenBLAS to one thread; with one raise per generation the tiny
  model (10 x 32 tokens, load ~6.5 on 2 cores) took 1.8 s of CPU on the main thread, 1.9 s on a
  worker thread and 1.8 s on a worker thread pinned to 1 (issue 16), so nothing is pinned.
- Chat prompts are rendered like ``mlxquant generate --chat`` (:func:`mlxquant.runtime.chat.chat_prompt`:
  the model's template in the Jinja sandbox, its BOS/EOS texts, the generation prompt) and
  tokenized without adding special tokens; completion prompts are tokenized as ``generate`` does
  without ``--chat`` (special tokens added as the tokenizer says).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import MlxquantError

log = logging.getLogger(__name__)


class Busy(MlxquantError):
    """The queue of waiting generations is full."""


class _Cancelled(Exception):
    """Raised from the token callback to end a generation whose client left."""


class _StopText(Exception):
    """Raised from the token callback when a stop string appeared."""


@dataclass
class Params:
    """What one request asks for (already validated)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What a generation produced: ``text`` (cut before a stop string), token counts and why it
    ended: ``"stop"`` (end-of-sequence token or stop string), ``"length"`` (max_tokens) or
    ``"cancelled"`` (the client left; nothing is sent)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    seconds: float


class TextStream:
    """Decoded text of a growing token list, released only when it is final: not the end of an
    unfinished multi-byte character, and not a tail that could still become a stop string.
    ``feed(ids)`` returns the new text that may be sent; ``hit`` is set when a stop string
    appeared (the text is cut before it)."""

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str]):
        self.decode, self.stop = decode, [s for s in stop if s]
        self.sent = ""
        self.text = ""
        self.hit = False

    def _cut(self, text: str) -> str:
        at = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if at >= 0:
            self.hit = True
            return text[:at]
        return text

    def feed(self, ids: list[int]) -> str:
        text = self._cut(self.decode(ids))
        self.text = text
        if self.hit:
            return self._release(text)
        if text.endswith("\ufffd"):
            return ""
        hold = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return self._release(text[:len(text) - hold])

    def finish(self) -> str:
        """The rest of the text at the end of the generation."""
        return self._release(self.text)

    def _release(self, upto: str) -> str:
        if len(upto) <= len(self.sent) or not upto.startswith(self.sent):
            return ""
        new = upto[len(self.sent):]
        self.sent = upto
        return new


class Turns:
    """A first-come first-served lock: generations start in the order they asked (Python's
    ``Lock`` wakes an arbitrary waiter, which lets one request starve under load); a waiter whose
    ``cancel`` is set leaves the queue, or passes the turn on if it was just handed it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._busy = False
        self._queue: deque[threading.Event] = deque()

    def acquire(self, cancel: threading.Event, poll: float = 0.05) -> bool:
        """Wait for the turn; False (without it) when ``cancel`` is set first."""
        with self._mutex:
            if not self._busy:
                self._busy = True
                return True
            turn = threading.Event()
            self._queue.append(turn)
        while not turn.wait(poll):
            if cancel.is_set():
                with self._mutex:
                    if turn in self._queue:
                        self._queue.remove(turn)
                        return False
                break  # handed the turn meanwhile
        if cancel.is_set():
            self.release()
            return False
        return True

    def release(self) -> None:
        """End the current turn: hand it to the longest waiter, if any."""
        with self._mutex:
            if self._queue:
                self._queue.popleft().set()
            else:
                self._busy = False


class Engine:
    """The served model, its id, and the lock that serializes generations.

    ``history`` keeps the last :data:`HISTORY` outcomes (tests and the load benchmark read it).
    """

    HISTORY = 256

    def __init__(self, model: Any, model_id: str, max_pending: int = 64):
        self.model, self.model_id = model, model_id
        self.max_pending = max_pending
        self._turns = Turns()
        self._pending = 0
        self._count = threading.Lock()
        self.history: list[Outcome] = []
        self.closing = threading.Event()  # set when the server stops: running generations end
        cfg = getattr(getattr(model, "weights", None), "config", None) or {}
        ctx = cfg.get("max_position_embeddings")
        self.context_length: int | None = ctx if isinstance(ctx, int) and ctx > 0 else None

    # -- prompts ------------------------------------------------------------------------------
    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` rendered with the model's chat template.

        Raises:
            ChatTemplateError: no template, or it fails on these messages.
        """
        from ..runtime.chat import ChatTemplateError, find_chat_template, render_chat, token_text

        w = self.model.weights
        template = find_chat_template(w.path, getattr(w, "metadata", None))
        if template is None:
            raise ChatTemplateError(f"{Path(w.path).name}: the model has no chat template; "
                                    "use /v1/completions")
        tok, spec = self.model.tokenizer, self.model.spec
        eos = list(getattr(spec, "eos_token_ids", []) or [])
        text = render_chat(template, messages, bos_token=token_text(tok, spec.bos_token_id),
                           eos_token=token_text(tok, eos[0] if eos else None))
        return tok.encode(text, add_special=False)

    def completion_ids(self, prompt: str) -> list[int]:
        """Token ids of a completion prompt (special tokens added as the tokenizer says)."""
        return self.model.tokenizer.encode(prompt, add_special=True)

    # -- generation ---------------------------------------------------------------------------
    def reserve(self) -> None:
        """Count a request into the queue (:meth:`release` when it is done).

        Raises:
            Busy: ``max_pending`` requests are already queued or running.
        """
        with self._count:
            if self._pending >= self.max_pending:
                raise Busy(f"{self._pending} requests are already queued; try again later")
            self._pending += 1

    def release(self) -> None:
        with self._count:
            self._pending -= 1

    def generate(self, ids: list[int], params: Params, cancel: threading.Event,
                 on_text: Callable[[str], None] | None = None) -> Outcome:
        """Generate after ``ids`` (on the calling worker thread, after the generations queued
        before it). ``on_text(piece)`` receives the text as it becomes final; ``cancel`` is read
        while waiting and between tokens."""
        from ..runtime.generate import generate_tokens

        t0 = time.perf_counter()
        if not self._turns.acquire(cancel):  # the client left while this request waited
            return self._record(Outcome("", len(ids), 0, "cancelled", time.perf_counter() - t0))
        try:
            tokens: list[int] = []
            stream = TextStream(self.model.tokenizer.decode, params.stop)

            def on_token(t: int) -> None:
                if cancel.is_set() or self.closing.is_set():
                    raise _Cancelled
                tokens.append(t)
                piece = stream.feed(tokens)
                if piece and on_text is not None:
                    on_text(piece)
                if stream.hit:
                    raise _StopText

            try:
                gen = generate_tokens(self.model, ids, params.max_tokens, params.temperature,
                                      params.top_p, params.seed, on_token=on_token)
                reason = "stop" if gen.stopped_by == "eos" else "length"
            except _StopText:
                reason = "stop"
            except _Cancelled:
                return self._record(Outcome(stream.text, len(ids), len(tokens), "cancelled",
                                            time.perf_counter() - t0))
            rest = stream.finish()
            if rest and on_text is not None:
                on_text(rest)
            return self._record(Outcome(stream.text, len(ids), len(tokens), reason,
                                        time.perf_counter() - t0))
        finally:
            self._turns.release()

    def _record(self, outcome: Outcome) -> Outcome:
        with self._count:
            self.history = (self.history + [outcome])[-self.HISTORY:]
        if outcome.finish_reason == "cancelled":
            log.info("generation cancelled after %d tokens (client gone)", outcome.completion_tokens)
        return outcome
