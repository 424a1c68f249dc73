"""Calibration: importance matrices (``mlxquant imatrix``) computed as llama.cpp's ``llama-imatrix``
computes them. :mod:`.stats` holds the per-tensor sums any backend feeds, :mod:`.collect` runs the
text through a model (the NumPy runtime, or mlx-lm's through :mod:`.mlx_collect`), :mod:`.reduce`
adds chunks up, also over the processes of an ``mx.distributed`` group (:mod:`.launch` starts one
on this machine)."""

from .collect import ImatrixError, ImatrixReport, imatrix
from .stats import ImatrixStats

__all__ = ["ImatrixError", "ImatrixReport", "ImatrixStats", "imatrix"]
