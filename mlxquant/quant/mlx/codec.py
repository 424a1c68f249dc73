"""The MLX codec base: :class:`mlxquant.quant.codec.Codec`'s entry points run over row chunks.

MLX builds a lazy graph; a codec of a few thousand small ops per chunk must evaluate each chunk
before it builds the next one, or the graph and its temporaries grow with the tensor. Each codec
keeps its own tuned chunk size (weights per chunk; see the constants in the codec modules).
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx

from ..codec import Codec

# Weights per evaluated chunk of a :class:`ChunkedCodec` (the legacy, FP4 and ternary codecs).
CHUNK_WEIGHTS = 1 << 18


def in_chunks(fn: Callable[[int, int], mx.array], rows: int, cols: int, chunk_weights: int) -> mx.array:
    """``fn(r0, r1)`` over spans of ``max(1, chunk_weights // cols)`` rows, concatenated on axis 0.

    ``cols`` is the number of weights in one row. One span (or none: ``fn(0, 0)``) stays lazy,
    the caller decides when to evaluate; several are each evaluated before the next is built.
    """
    step = max(1, chunk_weights // max(cols, 1))
    if rows <= step:
        return fn(0, rows)
    parts = []
    for r0 in range(0, rows, step):
        part = fn(r0, min(rows, r0 + step))
        mx.eval(part)
        parts.append(part)
    return mx.concatenate(parts, axis=0)


class ChunkedCodec(Codec):
    """MLX codec base: the :class:`Codec` entry points, run over row chunks (:func:`in_chunks`)
    of :data:`CHUNK_WEIGHTS` weights."""

    @classmethod
    def quantize_rows(cls, x: mx.array, imatrix: mx.array | None) -> mx.array:
        if imatrix is not None and cls.qtype.uses_imatrix:
            return cls.encode_rows_weighted(x, imatrix)
        rows, cols = x.shape
        t = cls.qtype
        rb = t.row_bytes(cols)
        return in_chunks(
            lambda r0, r1: cls.encode_blocks(x[r0:r1].reshape(-1, t.block_size)).reshape(r1 - r0, rb),
            rows,
            cols,
            CHUNK_WEIGHTS,
        )

    @classmethod
    def dequantize_rows(cls, data: mx.array, cols: int) -> mx.array:
        t = cls.qtype
        return in_chunks(
            lambda r0, r1: cls.decode_blocks(data[r0:r1].reshape(-1, t.type_size)).reshape(r1 - r0, cols),
            data.shape[0],
            cols,
            CHUNK_WEIGHTS,
        )
