"""The statistics of an importance matrix: per weight tensor, the sum of the squared input
activations of each input column (``in_sum2``) and the number of activation rows (``counts``).

This follows ``IMatrixCollector::collect_imatrix`` in llama.cpp's ``tools/imatrix/imatrix.cpp``:
sums are float32 (``std::vector<float>``) grown one activation row at a time
(``acc[j] += x[j] * x[j]``), counts int64, one count per dense tensor; a non-finite sum is an error.
:meth:`ImatrixStats.add` keeps that order: the running sum is folded into the first squared row and
the rows are reduced along axis 0, which NumPy does row after row in float32 (not pairwise), so the
same activations give llama-imatrix's float32 sums bit for bit.

Any backend can feed :meth:`~ImatrixStats.add` (the NumPy runtime's observer does,
:mod:`mlxquant.calib.collect`), and the statistics of two runs or two processes over different
chunks of text add up with :meth:`~ImatrixStats.merge` (as ``llama-imatrix --in-file`` combines
files): sums and counts are additive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ..errors import MlxquantError


class StatsError(MlxquantError, ValueError):
    """Activations that cannot be accumulated: wrong width, non-finite values, mismatched merges."""


@dataclass
class TensorStats:
    """One weight tensor: ``in_sum2`` float32 ``(n_per_row,)``, ``count`` activation rows."""

    in_sum2: np.ndarray
    count: int = 0


@dataclass
class ImatrixStats:
    """Per-tensor sums of squared activations and counts, by GGUF tensor name.

    Attributes:
        chunk_size: tokens per chunk (llama-imatrix's ``n_ctx / n_parallel``), for the chunk count.
        datasets: the calibration text files (``imatrix.datasets``).
        tensors: GGUF name -> :class:`TensorStats`.
    """

    chunk_size: int
    datasets: list[str] = field(default_factory=list)
    tensors: dict[str, TensorStats] = field(default_factory=dict)

    def add(self, names: str | Iterable[str], x: np.ndarray) -> None:
        """Accumulate activations ``x`` (float32 ``(rows, n_per_row)``: one row per token) into
        every tensor in ``names`` (tensors that read the same input, e.g. q/k/v, get the same
        statistics, as in llama.cpp where each matmul reports its own copy).

        Raises:
            StatsError: ``x`` is not 2-D, its width differs from earlier calls for a tensor, or a
                sum becomes non-finite.
        """
        names = [names] if isinstance(names, str) else list(names)
        x = np.asarray(x)
        if x.ndim != 2:
            raise StatsError(f"activations for {names[0]!r} must be 2-D (rows, columns), not {x.shape}")
        if x.shape[0] == 0:
            return
        sq = np.square(x, dtype=np.float32)  # (rows, n_per_row) float32
        first = None
        for name in names:
            t = self.tensors.get(name)
            if t is None:
                t = self.tensors[name] = TensorStats(np.zeros(x.shape[1], np.float32))
            elif t.in_sum2.shape[0] != x.shape[1]:
                raise StatsError(f"tensor {name!r}: activations of {x.shape[1]} columns after "
                                 f"{t.in_sum2.shape[0]}")
            if first is not None and np.array_equal(t.in_sum2, first[0]):
                t.in_sum2 = first[1].copy()  # same history, same sums: reduce once
            else:
                before = t.in_sum2
                row0 = sq[0].copy()
                sq[0] = before + row0  # llama's order: ((acc + x0²) + x1²) + ...
                t.in_sum2 = np.add.reduce(sq, axis=0, dtype=np.float32)
                sq[0] = row0
                if not np.isfinite(t.in_sum2).all():
                    raise StatsError(f"non-finite activations in {name!r}")
                first = (before, t.in_sum2)
            t.count += x.shape[0]

    def merge(self, other: "ImatrixStats") -> "ImatrixStats":
        """Add ``other``'s sums and counts into these (same chunk size), in place; returns self.

        Raises:
            StatsError: another chunk size, or a tensor of another width.
        """
        if other.chunk_size != self.chunk_size:
            raise StatsError(f"cannot merge statistics of {other.chunk_size}-token chunks into "
                             f"{self.chunk_size}-token chunks")
        for name, o in other.tensors.items():
            t = self.tensors.get(name)
            if t is None:
                self.tensors[name] = TensorStats(o.in_sum2.copy(), o.count)
                continue
            if t.in_sum2.shape != o.in_sum2.shape:
                raise StatsError(f"tensor {name!r}: {o.in_sum2.shape[0]} columns, here "
                                 f"{t.in_sum2.shape[0]}")
            t.in_sum2 = t.in_sum2 + o.in_sum2
            t.count += o.count
        self.datasets += [d for d in other.datasets if d not in self.datasets]
        return self

    @property
    def chunk_count(self) -> int:
        """Chunks seen: the largest count over the chunk size (llama-imatrix's ``m_last_chunk``)."""
        most = max((t.count for t in self.tensors.values()), default=0)
        return most // self.chunk_size if self.chunk_size > 0 else 0

    def importance(self, name: str) -> np.ndarray:
        """``in_sum2 / count`` of one tensor (what llama-quantize passes to the quantizer)."""
        t = self.tensors[name]
        return t.in_sum2 / np.float32(t.count) if t.count else np.ones_like(t.in_sum2)
