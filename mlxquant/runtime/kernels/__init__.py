"""Matrix products over weights kept in their GGUF blocks (the CPU runtime's quantized linears).

:class:`~.matrix.QuantMatrix` wraps a tensor's stored bytes; :func:`~.matrix.linear` is the
runtime's ``x @ W.T`` for it or a float32 matrix, :func:`~.matrix.linear_group` for several
sharing their input. The compiled kernels are in :mod:`.fused`, the row dot products in vector IR
in :mod:`.vdots` (built with :mod:`.vir`), the other types' block dot products in :mod:`.dots` and
:mod:`.kdots`, the block layouts in :mod:`.layout`.
"""

from .fused import DOTS, kernel_for
from .matrix import FUSED_MAX_ROWS, QuantMatrix, kernel_threads, linear, linear_group, set_kernel_threads

__all__ = ["DOTS", "FUSED_MAX_ROWS", "QuantMatrix", "kernel_for", "kernel_threads", "linear",
           "linear_group", "set_kernel_threads"]
