"""Metal kernels for the GGUF block types MLX has no quantized matmul for (``mx.fast.metal_kernel``).

Kernel sources live in ``kernels/`` (package data): ``common.metal`` (byte readers), one
``<TYPE>.metal`` per block type that decodes 16 consecutive weights of a block into registers
(``dq16``; ggml's ``dequantize_row_*`` for the type, sub-block by sub-block), and two bodies:

- ``mv.metal`` -- matrix-vector, one simdgroup (32 lanes) per (output row, token): lane ``l`` takes
  the 16-weight sub-blocks ``l, l+32, ...`` of the row (the granularity of the K-quants' scales,
  as llama.cpp's ``kernel_mul_mv_q6_K_f32`` splits a block over lanes), decodes each in
  registers, dots it with the activations, and ``simd_sum`` reduces the row. Grid
  ``(32, rows, tokens)``, threadgroup ``(32, 2, 1)``: two rows per threadgroup, the last one may be
  partial (dispatchThreads launches only threads inside the grid).
- ``mm.metal`` -- tiled matmul for prompts: a threadgroup of 64 threads computes 32 rows x 16
  tokens; per 16-weight step, 32 threads decode one sub-block of their row into threadgroup
  memory, all 64 stage 16x16 activations, then each thread accumulates 8 outputs. Grid
  ``(64 * ceil(rows/32), ceil(tokens/16), 1)``, threadgroup ``(64, 1, 1)``.

Parameters MLX generates from the names: inputs ``w`` (uint8 blocks, rows x row_bytes), ``x``
(float32, tokens x cols), ``tab`` (uint8 lookup table of the type: the IQ grids, or one unused
byte); output ``y`` (float32, tokens x rows); template ints ``ROWS``, ``COLS``, ``NTOK``; the
attributes ``thread_position_in_grid``, ``thread_position_in_threadgroup`` and
``threadgroup_position_in_grid``. The emulation harness (tests/metal_emu/) compiles the same
files as C++. Nothing here runs without Metal (:func:`available`).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import mlx.core as mx
import numpy as np

from ..errors import QuantTypeError

KERNEL_TYPES = ("Q2_K", "Q3_K", "Q6_K", "Q8_K", "IQ4_NL", "IQ4_XS", "IQ2_XXS", "IQ2_XS", "IQ2_S",
                "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M")
MV_MAX_TOKENS = 4           # up to this many tokens: the matvec kernel, one simdgroup per row
MV_THREADGROUP = (32, 2, 1)
MM_THREADGROUP = (64, 1, 1)
MM_ROWS, MM_TOKENS = 32, 16
INPUTS = ["w", "x", "tab"]
OUTPUTS = ["y"]


@lru_cache(maxsize=None)
def available() -> bool:
    """True when MLX runs on a Metal GPU (never on Linux)."""
    try:
        return bool(mx.metal.is_available())
    except AttributeError:
        return False


def source(name: str) -> str:
    """The text of ``kernels/<name>.metal``."""
    return resources.files(__package__).joinpath("kernels", f"{name}.metal").read_text()


def kernel_parts(qtype: str, body: str) -> tuple[str, str]:
    """(header, body) of the ``body`` kernel (``"mv"`` or ``"mm"``) for ``qtype``."""
    if qtype not in KERNEL_TYPES:
        raise QuantTypeError(f"{qtype}: no Metal kernel (types with one: {', '.join(KERNEL_TYPES)})")
    return source("common") + "\n" + source(qtype) + "\n", source(body)


@lru_cache(maxsize=None)
def table(qtype: str) -> np.ndarray:
    """The lookup table the ``qtype`` kernel reads as ``tab`` (little-endian bytes)."""
    from ..quant import grids_iq1, grids_iq2, grids_iq3
    from ..quant.numpy.iquants import KVALUES_IQ4NL

    tables = {"IQ2_XXS": grids_iq2.IQ2XXS_GRID, "IQ2_XS": grids_iq2.IQ2XS_GRID,
              "IQ2_S": grids_iq2.IQ2S_GRID, "IQ3_XXS": grids_iq3.IQ3XXS_GRID,
              "IQ3_S": grids_iq3.IQ3S_GRID, "IQ1_S": grids_iq1.IQ1S_GRID, "IQ1_M": grids_iq1.IQ1S_GRID,
              "IQ4_NL": KVALUES_IQ4NL, "IQ4_XS": KVALUES_IQ4NL}
    t = tables.get(qtype)
    if t is None:
        return np.zeros(1, np.uint8)
    return np.ascontiguousarray(np.asarray(t)).view(np.uint8).reshape(-1)


@lru_cache(maxsize=None)
def _kernel(qtype: str, body: str):
    header, src = kernel_parts(qtype, body)
    return mx.fast.metal_kernel(name=f"gguf_{body}_{qtype.lower()}", input_names=INPUTS,
                                output_names=OUTPUTS, source=src, header=header)


def dispatch(rows: int, ntok: int, body: str | None = None) -> tuple[str, tuple, tuple]:
    """(kernel body, grid, threadgroup) for ``ntok`` tokens through ``rows`` outputs: the matvec
    up to :data:`MV_MAX_TOKENS` tokens, else the tiled matmul (or the one ``body`` names)."""
    body = body or ("mv" if ntok <= MV_MAX_TOKENS else "mm")
    if body == "mv":
        return body, (32, rows, ntok), MV_THREADGROUP
    return body, (MM_THREADGROUP[0] * -(-rows // MM_ROWS), -(-ntok // MM_TOKENS), 1), MM_THREADGROUP


def matmul(qtype: str, blocks: mx.array, x: mx.array, rows: int, cols: int) -> mx.array:
    """``x @ W.T`` for W held as GGUF ``blocks`` (rows, row_bytes) uint8: x (..., cols) -> (...,
    rows) float32, on the GPU."""
    lead = x.shape[:-1]
    xf = x.reshape(-1, cols).astype(mx.float32)
    ntok = xf.shape[0]
    tab = mx.array(table(qtype))
    tmpl = [("ROWS", rows), ("COLS", cols), ("NTOK", ntok)]
    body, grid, tg = dispatch(rows, ntok)
    (y,) = _kernel(qtype, body)(inputs=[blocks, xf, tab], template=tmpl, grid=grid, threadgroup=tg,
                                output_shapes=[(ntok, rows)], output_dtypes=[mx.float32])
    return y.reshape(*lead, rows)
