"""Adding up an importance matrix over chunks, and over the processes of an ``mlx.launch`` group.

Every chunk's statistics are first summed on their own (float32, in llama-imatrix's row order,
:class:`~mlxquant.calib.stats.ImatrixStats`), then added into float64 totals (:class:`Totals`),
chunk after chunk. The float32 sums of one chunk are a function of that chunk alone, and float64
addition of a few hundred chunk sums is exact to ~1e-14 relative, so the totals do not depend on
how chunks are grouped: one process over chunks 0..n-1 and ``k`` processes over ``rank::k`` give
the same float32 result up to the last float32 rounding (one ulp, 6e-8 relative). llama-imatrix
instead keeps one float32 sum across chunks; the two differ by float32 accumulation error
(~1e-6 relative after a few hundred rows), far inside what any comparison with it can see
(different engines give different activations).

Distribution (``mx.distributed``): each process runs chunks ``rank, rank + size, ...``
(interleaved, so the processes get equal shares of a text whatever its length); the totals are
reduced with ``mx.distributed.all_sum`` in float64 (sums) and int64 (counts) — both supported by
MLX's ring backend on the CPU — and so is the per-chunk negative log-likelihood, placed at its
chunk's index in a float64 vector, so every process ends with the same running perplexity.

Same chunks, same activations: the NumPy runtime's activations change with OpenBLAS's thread count
(measured on the float base model: up to 2.4e-6 relative in the sums between 1 and 2 threads), so
a comparison with a single-process run must pin it (``MLXQUANT_BLAS_THREADS=1`` in every process;
one BLAS thread per process is also what processes sharing a machine's cores want).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..errors import MlxquantError
from .stats import ImatrixStats

log = logging.getLogger(__name__)

LAUNCH_ENV = ("MLX_RANK", "MLX_HOSTFILE", "OMPI_COMM_WORLD_RANK", "MLX_JACCL_COORDINATOR")
"""Variables ``mlx.launch`` (ring, jaccl) or ``mpirun`` set: a process started by one of them."""


class DistributedError(MlxquantError, RuntimeError):
    """A distributed run that cannot go on: no MLX, a group that cannot form, processes that
    disagree about what they computed."""


@dataclass
class Totals:
    """float64 sums and int64 counts per GGUF tensor name, added chunk by chunk."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def absorb(self, chunk: Iterable[tuple[str, np.ndarray, int]]) -> None:
        """Add one chunk's ``(name, float32 sums (n_per_row,), rows)``."""
        for name, s, n in chunk:
            s = np.asarray(s, np.float64)
            have = self.sums.get(name)
            if have is None:
                self.sums[name] = s.copy()
                self.counts[name] = int(n)
            elif have.shape != s.shape:
                raise DistributedError(f"tensor {name!r}: {s.shape[0]} columns after {have.shape[0]}")
            else:
                have += s
                self.counts[name] += int(n)

    def absorb_stats(self, stats: ImatrixStats) -> None:
        self.absorb((n, t.in_sum2, t.count) for n, t in stats.tensors.items())

    def to_stats(self, chunk_size: int, datasets: list[str]) -> ImatrixStats:
        """The totals as :class:`ImatrixStats` (float32 sums, rounded once)."""
        from .stats import TensorStats

        stats = ImatrixStats(chunk_size, list(datasets))
        for name in sorted(self.sums):
            stats.tensors[name] = TensorStats(self.sums[name].astype(np.float32), self.counts[name])
        return stats


def launched() -> bool:
    """True in a process started by ``mlx.launch`` / ``mpirun`` (its variables are set)."""
    return any(os.environ.get(k) for k in LAUNCH_ENV)


def init_group(required: bool) -> Any | None:
    """The ``mx.distributed`` group of this process, or None for a single process.

    ``required`` (``--distributed``): MLX must be importable and the group must form (outside
    ``mlx.launch`` it cannot: an error; ``mlx.launch`` with one host gives a group of one: a
    warning). Otherwise a group is looked for only in a process that ``mlx.launch`` started
    (:func:`launched`), and used when it has more than one member.

    Raises:
        DistributedError: ``required`` and MLX is missing or the group cannot form.
    """
    if not required and not launched():
        return None
    try:
        import mlx.core as mx
    except ImportError:
        if required:
            raise DistributedError("--distributed needs MLX (pip install mlx; mlx[cpu] on Linux)") from None
        return None
    try:
        group = mx.distributed.init(strict=required)
    except Exception as e:  # the backend's own message (ports, hostfile)
        raise DistributedError(f"mx.distributed could not form a group: {e}") from None
    if group.size() == 1:
        if required:
            log.warning("--distributed: a group of one process (start the processes with mlx.launch)")
        return None
    return group


def all_sum(group: Any, a: np.ndarray) -> np.ndarray:
    """``mx.distributed.all_sum`` of a float64 or int64 NumPy array over ``group``, on the CPU."""
    import mlx.core as mx

    with mx.stream(mx.cpu):
        out = mx.distributed.all_sum(mx.array(a), group=group)
        mx.eval(out)
    return np.array(out, dtype=a.dtype)


def reduce_totals(group: Any, totals: Totals, nll: np.ndarray, scored: np.ndarray) -> None:
    """Sum ``totals``, the per-chunk NLL (float64) and scored-token counts (int64) over ``group``
    in place. Every process must hold the same tensors with the same widths (each runs at least one
    chunk of the same model); a layout that differs is detected first and refused."""
    names = sorted(totals.sums)
    widths = np.array([totals.sums[n].shape[0] for n in names], np.int64)
    layout = np.array([len(names), int(widths.sum()), int((widths * np.arange(1, len(names) + 1)).sum())],
                      np.int64)
    size = group.size()
    if not np.array_equal(all_sum(group, layout), layout * size):
        raise DistributedError("the processes collected different tensors (not the same model?)")
    flat = all_sum(group, np.concatenate([totals.sums[n] for n in names]).astype(np.float64))
    counts = all_sum(group, np.array([totals.counts[n] for n in names], np.int64))
    off = 0
    for n, w, c in zip(names, widths, counts):
        totals.sums[n] = flat[off:off + w]
        totals.counts[n] = int(c)
        off += w
    nll[:] = all_sum(group, nll.astype(np.float64))
    scored[:] = all_sum(group, scored.astype(np.int64))
