"""The codec base class: a codec turns float rows into GGUF blocks and back for one type.

Subclasses register themselves with ``class Q8_0(Codec, qtype="Q8_0"): ...`` (the pattern of
gguf-py's ``quants.py``) and implement block encoding and decoding, vectorized over all blocks.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .types import QuantType, get_type, register_codec


class Codec:
    """Quantize/dequantize one GGML type.

    Inputs reaching a codec are already validated by :mod:`mlxquant.quant.api`: float32,
    C-contiguous, finite, 2-D with ``cols % block_size == 0``; an imatrix is float32 ``(cols,)``,
    finite and non-negative.

    The default :meth:`quantize_rows` encodes every block independently with
    :meth:`encode_blocks`, which is what ggml's ``quantize_row_*_ref`` does. Types whose ggml
    quantizer takes an importance matrix override :meth:`encode_rows_weighted`, which sees whole
    rows (some types use row-level statistics there).
    """

    qtype: ClassVar[QuantType]
    backend: ClassVar[str] = "numpy"
    # weights per row chunk of the API's thread pool; None: the API's cache-sized default
    chunk_weights: ClassVar[int | None] = None

    def __init_subclass__(cls, qtype: str | None = None, backend: str = "numpy", **kwargs):
        super().__init_subclass__(**kwargs)
        if qtype is not None:
            cls.qtype = get_type(qtype)
            cls.backend = backend
            register_codec(qtype, backend, cls)

    # -- to implement -------------------------------------------------------------------------
    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        """(n_blocks, block_size) float32 -> (n_blocks, type_size) uint8."""
        raise NotImplementedError

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """(n_blocks, type_size) uint8 -> (n_blocks, block_size) float32."""
        raise NotImplementedError

    @classmethod
    def encode_rows_weighted(cls, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
        """(rows, cols) float32 and (cols,) importance -> (rows, row_bytes) uint8."""
        raise NotImplementedError

    # -- entry points used by the API ---------------------------------------------------------
    @classmethod
    def quantize_rows(cls, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        rows, cols = x.shape
        if imatrix is not None and cls.qtype.uses_imatrix:
            return cls.encode_rows_weighted(x, imatrix)
        bs = cls.qtype.block_size
        return cls.encode_blocks(x.reshape(-1, bs)).reshape(rows, cls.qtype.row_bytes(cols))

    @classmethod
    def dequantize_rows(cls, data: np.ndarray, cols: int) -> np.ndarray:
        rows = data.shape[0]
        t = cls.qtype
        out = cls.decode_blocks(data.reshape(-1, t.type_size))
        return out.reshape(rows, cols)
