"""``mlxquant imatrix``: an importance matrix from a calibration text, with the statistics and
conventions of llama.cpp's ``llama-imatrix`` (``tools/imatrix/imatrix.cpp``), so that
``llama-quantize --imatrix`` and ``mlxquant convert --imatrix`` take the file as they take its.

What llama-imatrix does, and this module with it:

- the text file is read as bytes (one trailing newline dropped, as ``-f`` does) and tokenized once
  with the model's tokenizer, special tokens added as the tokenizer config says; fewer than two
  chunks of tokens is an error;
- it is cut into ``min(chunks, tokens // ctx)`` chunks of ``ctx`` tokens; each chunk starts at
  position 0 with an empty KV cache, its first token replaced by BOS when the tokenizer adds one;
- for every matmul whose weight is ``blk.*`` (and ``output.weight`` with ``process_output``; a tied
  output reads ``token_embd.weight`` and is never collected) the squared inputs are summed per input
  column and the rows counted (:class:`~mlxquant.calib.stats.ImatrixStats`); tensors that share an
  input (q/k/v, gate/up) get the same statistics; llama-imatrix skips batches of fewer than 16
  tokens: chunks of more than 512 tokens are run in batches of 512 (llama.cpp's physical batch)
  and a last batch under 16 tokens is skipped the same way (llama-imatrix packs several chunks of
  at most 1024 tokens into one batch; for sizes that do not divide 2048 its split, and so what it
  skips, can differ; sizes of 16-512 tokens and multiples of 512 match);
- the running perplexity after each chunk scores positions ``ctx/2 .. ctx-2`` of the chunk, each
  predicting the next token, as llama-imatrix prints it (``[1]12.3456,[2]...``).

Two runtimes feed the statistics, chunk by chunk, through the same loop (:func:`_run`): the
NumPy runtime (``backend="numpy"``, its observer hook: :class:`_NumpyRunner`, several chunks side
by side on threads of their own) and mlx-lm's models
(``backend="mlx"``, taps on their linear layers: :mod:`mlxquant.calib.mlx_collect`). Each
chunk's float32 sums are added into float64 totals, so that the result does not depend on how the
chunks are shared out over the processes of an ``mx.distributed`` group
(:mod:`mlxquant.calib.reduce`: ``distributed=True``, or a process started by ``mlx.launch``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import MlxquantError
from ..formats.atomic import check_output
from ..formats.imatrix import ImatrixData
from ..formats.imatrix_write import entries_from, format_for, write_imatrix
from ..models.base import OBSERVED_INPUTS
from .reduce import Totals, init_group, reduce_totals
from .stats import ImatrixStats

log = logging.getLogger(__name__)

MIN_CTX = 16  # llama-imatrix ignores matmuls over fewer tokens
UBATCH = 512  # llama.cpp's default physical batch (n_ubatch)
MAX_WORKERS = 4  # chunks run side by side at most (each holds its activations and logits)
BACKENDS = ("numpy", "mlx")
Score = Callable[[np.ndarray, np.ndarray], float]
"""``score(logits, window)``: a chunk's summed NLL (:func:`_nll` on the scored positions)."""
Progress = Callable[[int, int, str], None]
"""``progress(done_chunks, total_chunks, label)`` after each chunk."""


class ImatrixError(MlxquantError, ValueError):
    """Input an importance matrix cannot be computed from: too little text, a bad context size, a
    backend that cannot run the model."""


@dataclass
class ImatrixReport:
    """What :func:`imatrix` computed (``stats`` is left out of :meth:`as_dict`)."""

    model: str
    text: str
    out: str | None
    format: str | None
    backend: str
    ctx: int
    chunks: int
    text_tokens: int
    tokens: int
    tensors: int
    seconds: float
    tokens_per_second: float
    ppl: float | None
    ppl_per_chunk: list[float] = field(default_factory=list)
    stats: ImatrixStats | None = None
    processes: int = 1
    rank: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("stats")
        return d


def read_calibration_text(path: str | os.PathLike) -> str:
    """The text of ``path`` as llama.cpp's ``-f`` reads it: UTF-8 (invalid bytes replaced), one
    trailing newline removed.

    Raises:
        ImatrixError: the file is empty; OSError naming the file.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    text = raw.decode("utf-8", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise ImatrixError(f"{path}: the calibration text is empty")
    return text


def chunk_tokens(ids: list[int], ctx: int, chunks: int | None, bos: int | None) -> list[np.ndarray]:
    """llama-imatrix's chunks: ``min(chunks, len(ids) // ctx)`` of ``ctx`` tokens, BOS first when
    given. Raises ImatrixError for fewer than ``2 * ctx`` tokens (llama-imatrix's rule)."""
    if len(ids) < 2 * ctx:
        raise ImatrixError(f"the text tokenizes to {len(ids)} tokens: at least {2 * ctx} (two chunks "
                           f"of {ctx}) are needed; use more text or a smaller --ctx")
    from ..eval.evaluate import make_windows

    return make_windows(ids, ctx, chunks, bos)


class _Collector:
    """Maps the runtime's ``(layer, role)`` to GGUF tensor names (through the model's
    architecture); :meth:`observer` makes the hook that feeds one chunk's :class:`ImatrixStats`,
    skipping batches under :data:`MIN_CTX` tokens."""

    def __init__(self, model: Any, process_output: bool):
        w = model.weights
        self._names: dict[tuple[int, str], list[str]] = {}
        for i in range(model.spec.n_layers):
            for role, hf in OBSERVED_INPUTS.items():
                self._names[(i, role)] = self._keep(w, [f"model.layers.{i}.{n}" for n in hf], False)
        out = "lm_head.weight" if "lm_head.weight" in w else "model.embed_tokens.weight"
        self._names[(-1, "output")] = self._keep(w, [out], process_output)

    @staticmethod
    def _keep(w: Any, hf_names: list[str], process_output: bool) -> list[str]:
        names = []
        for hf in hf_names:
            g = w.arch.tensor_name_to_gguf(hf, w.config)
            if g is not None and (g.startswith("blk.") or (process_output and g == "output.weight")):
                names.append(g)
        return names

    def observer(self, stats: ImatrixStats) -> Callable[[int, str, np.ndarray], None]:
        def observe(layer: int, role: str, x: np.ndarray) -> None:
            names = self._names.get((layer, role))
            if names and x.shape[0] >= MIN_CTX:
                stats.add(names, x)

        return observe


class _NumpyRunner:
    """The NumPy runtime, one chunk per forward pass (batches of :data:`UBATCH` tokens through the
    KV cache, as llama.cpp runs them), its observer filling a fresh :class:`ImatrixStats` per chunk.

    With ``threads`` > 1, up to :data:`MAX_WORKERS` chunks run side by side on threads of their
    own, BLAS getting ``threads // workers`` threads each: NumPy's element-wise work (softmax,
    activations, the sums of squares) is single-threaded, and one-thread BLAS wastes nothing on
    synchronization, so on 2 cores two chunks at a time beat one chunk with 2 BLAS threads by
    ~1.5x when idle and more under load. Every chunk's sums are its own, so the totals do not
    depend on which thread ran what; the BLAS thread count does change the last bits (see
    :mod:`mlxquant.runtime.blas`).
    """

    backend = "numpy"

    def __init__(self, model: str | os.PathLike, ctx: int, process_output: bool, budget: int | None,
                 threads: int | None = None):
        from ..runtime.backend import load_model
        from ..runtime.blas import cpu_cores

        self.m = load_model(model, backend="numpy", budget=budget, batch=ctx if ctx <= UBATCH else UBATCH)
        self.tokenizer, self.path = self.m.tokenizer, self.m.weights.path
        self.ctx, self.process_output = ctx, process_output
        self.threads = max(1, threads if threads is not None else cpu_cores())
        self._collector = _Collector(self.m, process_output)
        self.m.weights.preload()  # decoded once, before the timed loop and the threads start

    def chunk(self, w: np.ndarray, first: int) -> tuple[np.ndarray, list[tuple[str, np.ndarray, int]]]:
        """Run one chunk: logits of positions ``first..`` ``(len(w) - first, vocab)`` float32 and
        the chunk's ``(name, float32 sums, rows)``."""
        stats = ImatrixStats(chunk_size=self.ctx)
        logits = self.m.forward(w, None, logits_from=0 if self.process_output else first,
                                observer=self._collector.observer(stats))
        return logits[-(len(w) - first):], [(n, t.in_sum2, t.count) for n, t in stats.tensors.items()]

    def _scored(self, w: np.ndarray, first: int, score: Score) -> tuple[float, list]:
        logits, sums = self.chunk(w, first)
        return score(logits, w), sums

    def chunks(self, windows: list[np.ndarray], first: int,
               score: Score) -> Iterator[tuple[float, list[tuple[str, np.ndarray, int]]]]:
        """``(score(logits, window), sums)`` of every window (:meth:`chunk`), in order, up to
        ``workers`` at a time (each thread scores its own logits)."""
        from ..runtime.blas import pinned_blas_threads, set_blas_threads

        workers = min(self.threads, MAX_WORKERS, len(windows))
        blas = pinned_blas_threads() or max(1, self.threads // max(workers, 1))
        old = set_blas_threads(blas)
        try:
            if workers <= 1:
                for w in windows:
                    yield self._scored(w, first, score)
                return
            ex = ThreadPoolExecutor(workers, thread_name_prefix="mlxquant-imatrix")
            try:
                todo = iter(windows)
                pending = deque(ex.submit(self._scored, w, first, score) for w in islice(todo, workers))
                while pending:
                    done = pending.popleft().result()
                    for w in islice(todo, 1):
                        pending.append(ex.submit(self._scored, w, first, score))
                    yield done
            finally:
                ex.shutdown(wait=False, cancel_futures=True)
        finally:
            if old is not None:
                set_blas_threads(old)


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed negative log-likelihood of ``targets`` under ``logits`` ``(n, vocab)`` float32, as
    llama-imatrix's ``log_softmax``: float32 exponentials summed in float64."""
    top = logits.max(axis=1, keepdims=True)
    sums = np.exp(logits - top).sum(axis=1, dtype=np.float64)
    picked = logits[np.arange(len(targets)), targets] - top[:, 0]
    return float(np.sum(np.log(sums) - picked))


def imatrix(model: str | os.PathLike, text: str | os.PathLike, out: str | os.PathLike | None = None, *,
            ctx: int = 512, chunks: int | None = None, process_output: bool = False,
            backend: str = "numpy", fmt: str | None = None, force: bool = False,
            progress: Progress | None = None, budget: int | None = None,
            distributed: bool | None = None, threads: int | None = None) -> ImatrixReport:
    """Compute an importance matrix of ``model`` over the text file ``text``, as llama-imatrix does
    (see the module docstring), and write it to ``out`` when given.

    Args:
        model: GGUF file, Hugging Face folder or MLX folder (any architecture the runtime runs).
        text: the calibration text file (UTF-8); its path is recorded in ``imatrix.datasets``.
        out: the imatrix file to write (None: compute only; the report carries the statistics).
        ctx: tokens per chunk (default 512, at least 16).
        chunks: at most this many chunks (default: as many as the text holds).
        process_output: also collect ``output.weight`` (an untied output matrix).
        backend: ``"numpy"`` (the NumPy CPU runtime, default) or ``"mlx"`` (mlx-lm's model on
            MLX's default device, float32 on a machine without an MLX GPU; a GGUF source goes
            through a temporary float32 HF folder: :mod:`mlxquant.calib.mlx_collect`).
        fmt: ``"gguf"`` or ``"dat"`` (default: ``dat`` for a ``.dat`` name, else ``gguf``).
        force: replace an existing ``out`` that mlxquant wrote (never a source, never a ``.dat``).
        progress: ``progress(done, total, label)`` after each chunk.
        budget: bytes of decoded float32 weights kept in memory (see
            :func:`mlxquant.runtime.load_model`).
        distributed: share the chunks over the processes of an ``mx.distributed`` group
            (:mod:`mlxquant.calib.reduce`; start them with ``mlx.launch``): True requires MLX and
            a group, False never looks for one, None (default) uses one when this process was
            started by ``mlx.launch`` and the group has more than one process. Every process
            returns the same statistics; only rank 0 writes ``out``.
        threads: CPU threads of the NumPy backend (default: every CPU this process may use); with
            more than one, chunks run side by side (:class:`_NumpyRunner`).

    Returns:
        An :class:`ImatrixReport`; ``report.stats`` holds the sums and counts.

    Raises:
        ImatrixError (empty or short text, bad ctx/chunks, an unknown backend, fewer chunks than
        processes), DistributedError, BackendError (no MLX), OutputExistsError,
        UnsafeOutputError, FormatError, TokenizerError, UnsupportedArchitectureError, OSError;
        nothing is written on error.
    """
    t0 = time.perf_counter()
    backend = backend.lower()
    if backend not in BACKENDS:
        raise ImatrixError(f"unknown imatrix backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if ctx < MIN_CTX:
        raise ImatrixError(f"a context of {ctx} tokens is too short for an imatrix (at least "
                           f"{MIN_CTX}: llama-imatrix ignores smaller batches)")
    if chunks is not None and chunks < 1:
        raise ImatrixError(f"chunks must be at least 1, not {chunks}")
    if threads is not None and threads < 1:
        raise ImatrixError(f"threads must be at least 1, not {threads}")
    fmt = format_for(out, fmt) if out is not None else None
    if out is not None:
        check_output(out, force, sources=[model, text])
    body = read_calibration_text(text)
    group = init_group(bool(distributed)) if distributed is not False else None
    rank, size = (group.rank(), group.size()) if group is not None else (0, 1)

    if backend == "mlx":
        from .mlx_collect import MlxRunner

        runner: Any = MlxRunner(model, ctx, process_output, UBATCH, MIN_CTX)
    else:
        runner = _NumpyRunner(model, ctx, process_output, budget, threads)
    if runner.tokenizer is None:
        raise ImatrixError(f"{runner.path}: no tokenizer to tokenize the text with")
    ids = runner.tokenizer.encode(body, add_special=True)
    bos = runner.tokenizer.bos_token_id
    bos = bos if ids and bos is not None and ids[0] == bos else None
    windows = chunk_tokens(ids, ctx, chunks, bos)
    if len(windows) < size:
        raise ImatrixError(f"{len(windows)} chunks cannot be shared by {size} processes: use more "
                           "text, a smaller --ctx or fewer processes")

    try:
        totals, nll, scored, t_run = _run(runner, windows, ctx, rank, size, progress)
    finally:
        if hasattr(runner, "close"):
            runner.close()
    if group is not None:
        reduce_totals(group, totals, nll, scored)
    run_s = time.perf_counter() - t_run
    if not totals.sums:
        raise ImatrixError(f"{runner.path}: no matmul weights named blk.* to collect")
    stats = totals.to_stats(ctx, [str(text)])
    ppls = [round(math.exp(a / b), 4) for a, b in zip(np.cumsum(nll), np.cumsum(scored))]
    if rank != 0:
        out = None  # only the first process writes
    if out is not None:
        data = ImatrixData(entries_from((n, t.in_sum2, t.count) for n, t in stats.tensors.items()),
                           tuple(stats.datasets), stats.chunk_count, stats.chunk_size)
        write_imatrix(out, data, fmt, force=force, sources=[model, text])
    tokens = len(windows) * ctx
    report = ImatrixReport(str(runner.path), str(text), None if out is None else str(out), fmt,
                           backend, ctx, len(windows), len(ids), tokens, len(stats.tensors),
                           round(time.perf_counter() - t0, 3), round(tokens / max(run_s, 1e-9), 1),
                           ppls[-1] if ppls else None, ppls, stats, size, rank)
    log.info("imatrix of %s: %d tensors over %d chunks of %d tokens (%d process%s), PPL %.4f",
             runner.path, len(stats.tensors), len(windows), ctx, size, "es" if size > 1 else "",
             report.ppl or 0)
    return report


def _run(runner: Any, windows: list[np.ndarray], ctx: int, rank: int, size: int,
         progress: Progress | None) -> tuple[Totals, np.ndarray, np.ndarray, float]:
    """Run chunks ``rank::size`` through ``runner``; returns the float64 totals, the NLL and the
    scored-token count of every chunk (zero for other processes' chunks) and the start time."""
    first = ctx // 2
    totals = Totals()
    nll, scored = np.zeros(len(windows), np.float64), np.zeros(len(windows), np.int64)
    mine = range(rank, len(windows), size)
    t_run = time.perf_counter()
    results = runner.chunks([windows[k] for k in mine], first,
                            lambda logits, w: _nll(logits[:-1], w[first + 1:]))
    try:
        for done, (k, (chunk_nll, sums)) in enumerate(zip(mine, results), 1):
            totals.absorb(sums)
            nll[k] = chunk_nll
            scored[k] = ctx - 1 - first
            if progress is not None:
                rate = done * ctx / max(time.perf_counter() - t_run, 1e-9)
                ppl = math.exp(nll.sum() / scored.sum())
                progress(done, len(mine), f"{rate:.0f} tok/s, PPL {ppl:.4f}")
    finally:
        results.close()
    return totals, nll, scored, t_run
