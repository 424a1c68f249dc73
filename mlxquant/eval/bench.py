"""``mlxquant bench``: prompt tokens/s, generation tokens/s and peak memory of a model.

The prompt is ``prompt_tokens`` token ids of real text when a tokenizer is present (a public-domain
sentence repeated), else a fixed pseudo-random sequence. One warm-up pass decodes the weights first
(and is timed separately as ``load_seconds``) so that the figures measure the forward pass, as
llama.cpp's llama-bench does after loading. Peak memory is this process's peak resident set size.

Machines are often shared: besides the best run (``prompt_tps``, ``generation_tps``) the report
gives the median of the runs and the 1-minute load average before and after them, so noise is
visible. On the NumPy backend a warm-up generation first lets the BLAS thread choice settle
(:mod:`mlxquant.runtime.blas`); ``threads`` reports what was measured per thread count.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..runtime.backend import load_model
from ..runtime.generate import generate_tokens

# Public domain (Lincoln, 1863).
TEXT = ("Four score and seven years ago our fathers brought forth on this continent, a new nation, "
        "conceived in Liberty, and dedicated to the proposition that all men are created equal. ")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process, bytes."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


@dataclass
class BenchReport:
    model: str
    backend: str
    prompt_tokens: int
    generated_tokens: int
    load_seconds: float
    prompt_tps: float
    generation_tps: float
    peak_rss_bytes: int
    file_bytes: int
    bits_per_weight: float
    threads: str
    prompt_tps_median: float = 0.0
    generation_tps_median: float = 0.0
    runs: int = 1
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before, after the runs
    cpu_count: int = 0
    compute_dtype: str = "float32"  # MLX: "float32" when widened on a CPU, else "as stored"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def prompt_ids(model: Any, n: int) -> list[int]:
    """``n`` prompt token ids (see module docstring)."""
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        ids = tok.encode(TEXT * (n // 8 + 2), add_special=False)
        if len(ids) >= n:
            return ids[:n]
    return [int(x) for x in np.random.default_rng(0).integers(0, model.spec.vocab, n)]


def load_average() -> float:
    """1-minute load average (0.0 where unknown)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


def bench(path: str | os.PathLike, prompt_tokens: int = 256, gen_tokens: int = 32,
          backend: str = "auto", repeats: int = 1) -> BenchReport:
    """Measure ``path`` (any model the runtime reads) on ``backend``.

    Args:
        prompt_tokens: prompt length for the prefill figure (default 256).
        gen_tokens: tokens generated greedily after it (default 32; EOS does not stop it).
        repeats: best (and median) of this many runs (default 1).

    Ctrl-C (KeyboardInterrupt) is answered between tokens, and within ~0.1 s during an MLX
    evaluation (:class:`~mlxquant.runtime.backend.MlxThread`).
    """
    t0 = time.perf_counter()
    model = load_model(path, backend=backend)
    model.forward([0, 1])  # warm-up: decodes the weights (kept within the memory budget)
    load = time.perf_counter() - t0
    ids = prompt_ids(model, prompt_tokens)
    if model.backend == "numpy":  # let the BLAS thread choice settle (not timed)
        generate_tokens(model, ids[:64], max_tokens=min(gen_tokens, 16), stop_at_eos=False)
    load0 = load_average()
    ps, gs, n_gen, g = [], [], 0, None
    for _ in range(max(1, repeats)):
        g = generate_tokens(model, ids, max_tokens=gen_tokens, stop_at_eos=False)
        ps.append(g.prompt_tps)
        gs.append(g.generation_tps)
        n_gen = len(g.tokens)
    threads = (g.blas_threads if g is not None and g.blas_threads else
               os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count()))
    return BenchReport(str(path), model.backend, len(ids), n_gen, round(load, 3), round(max(ps), 2),
                       round(max(gs), 2), peak_rss_bytes(), model.weights.file_bytes,
                       round(model.weights.bits_per_weight, 4), threads,
                       round(statistics.median(ps), 2), round(statistics.median(gs), 2), len(ps),
                       (load0, load_average()), os.cpu_count() or 0,
                       getattr(model, "dtype", "float32"))
