"""Per-tensor records and small helpers shared by the MLX conversions.

:class:`TensorRecord` is what every MLX-side conversion (:mod:`mlxquant.to_mlx`,
:mod:`mlxquant.mlx_to_gguf`, :mod:`mlxquant.convert_mlx`) reports for each output tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .quant.transcode import MLXQuant

Progress = Callable[[int, int, str], None]


@dataclass
class TensorRecord:
    """One output tensor: its name, type (``"affine4/g32"``, ``"Q4_1"``, ``"F16"``, ...), the
    source type, status (``"exact"``, ``"codes kept"``, ``"requantized"``, ``"float"``) and the
    max abs error against the source values (None when exact or float)."""

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


def _qtype_name(q: MLXQuant) -> str:
    return f"{q.mode}{q.bits}/g{q.group_size}" if q.mode == "affine" else q.mode


def _err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
