"""What a conversion reports: one record per output tensor, and the summary of the whole run.

Every route (:mod:`.hf_to_gguf`, :mod:`.gguf_to_gguf`, :mod:`.gguf_to_hf`, :mod:`.to_mlx`,
:mod:`.mlx_to_gguf`, :mod:`.mlx_to_hf`) returns a :class:`RouteResult`; :func:`build_report`
turns it into the :class:`ConversionReport` that :func:`mlxquant.convert.convert` returns.
Everything here is computed from what was planned, not by reading the output back, so a
conversion either fails before its output is renamed into place or succeeds.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..quant.transcode import MLXQuant

Progress = Callable[[int, int, str], None]
"""``progress(done, total, tensor_name)``, called after each tensor is produced or written."""


@dataclass
class TensorRecord:
    """One output tensor: its name, type (``"affine4/g32"``, ``"Q4_1"``, ``"F16"``, ...), the
    source type, status (``"exact"``, ``"codes kept"``, ``"requantized"``, ``"quantized"``,
    ``"copied"``, ``"float"``) and the max abs error against the source values (None when exact,
    float, or not measured)."""

    name: str
    type: str
    source_type: str
    status: str
    max_abs_error: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "type": self.type, "source_type": self.source_type, "status": self.status}
        if self.max_abs_error is not None:
            d["max_abs_error"] = self.max_abs_error
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class RouteResult:
    """What a route wrote: architecture, per-tensor records, parameters and tensor bytes."""

    architecture: str
    records: list[TensorRecord]
    parameters: int
    tensor_bytes: int


@dataclass
class ConversionReport:
    """What :func:`mlxquant.convert.convert` wrote."""

    src: str
    out: str
    to: str
    outtype: str  # the GGUF preset / HF dtype; "MLX" for MLX folders, "AUTO" for MLX -> GGUF
    architecture: str
    tensors: int
    parameters: int
    bytes: int  # on disk (the GGUF file, or every file of the folder)
    bits_per_weight: float  # 8 x tensor bytes / parameters, as llama.cpp reports BPW
    seconds: float
    types: dict[str, int] = field(default_factory=dict)
    imatrix: str | None = None
    # one dict per tensor (name, type, source_type, status, max_abs_error when measured)
    details: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def qtype_name(q: MLXQuant) -> str:
    """An MLX quantization as a type label: ``"affine4/g64"``, ``"mxfp4"``, ..."""
    return f"{q.mode}{q.bits}/g{q.group_size}" if q.mode == "affine" else q.mode


def max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b|`` in float64 (0.0 for empty arrays)."""
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def n_elements(shape: tuple[int, ...]) -> int:
    """Number of values of a tensor of ``shape``."""
    return int(np.prod(shape, dtype=np.int64))


def tensor_counter(progress: Progress | None, total: int) -> Callable[[Any], None] | None:
    """A writer's per-tensor callback (it receives the spec) that calls ``progress``."""
    if progress is None:
        return None
    done = [0]

    def tick(spec: Any) -> None:
        done[0] += 1
        progress(done[0], total, spec.name)

    return tick


def float_status(source_type: str, out_type: str, quantized: bool) -> str:
    """Status of a tensor of a float/GGUF route: copied, quantized or float."""
    if source_type == out_type:
        return "copied"
    return "quantized" if quantized else "float"


def build_report(src: Path, out: Path, to: str, outtype: str, result: RouteResult,
                 started: float, imatrix: str | None = None) -> ConversionReport:
    """The :class:`ConversionReport` of a finished route (sizes on disk are read with ``stat``)."""
    if out.is_file():
        nbytes = out.stat().st_size
    else:
        nbytes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    params = result.parameters
    return ConversionReport(
        str(src), str(out), to, outtype, result.architecture, len(result.records), params, nbytes,
        round(8 * result.tensor_bytes / params, 4) if params else 0.0,
        round(time.perf_counter() - started, 3), dict(Counter(r.type for r in result.records)),
        imatrix, [r.as_dict() for r in result.records])
