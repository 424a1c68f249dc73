"""llama.cpp's own quantizer as a reference, loaded from llama-cpp-python's ``libggml-base``.

``ggml_quantize_chunk`` is what ``llama-quantize`` calls; ``ggml_get_type_traits(t)->to_float``
is ggml's dequantizer. libggml-base is built without ``-march``, so its bytes are the same on every
x86-64 machine. Used by the tests, the golden-file generator and the benchmarks; never by the
library itself.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
from functools import lru_cache

import numpy as np

from ..quant.types import QuantType, get_type


class OracleUnavailable(RuntimeError):
    """llama-cpp-python (and so libggml-base) is not installed."""


class _TypeTraits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def find_libggml_base() -> str:
    """Path of libggml-base inside the installed llama_cpp package (without importing it)."""
    env = os.environ.get("MLXQUANT_GGML_BASE")
    if env:
        return env
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise OracleUnavailable("llama-cpp-python is not installed (pip install llama-cpp-python==0.3.36)")
    root = spec.submodule_search_locations[0]
    for pattern in ("lib/libggml-base.so*", "lib/libggml-base.dylib", "lib/libggml-base*"):
        hits = sorted(glob.glob(os.path.join(root, pattern)))
        if hits:
            return hits[0]
    raise OracleUnavailable(f"libggml-base not found under {root}/lib")


class GGMLOracle:
    """ctypes bindings to the reference codecs of one libggml-base."""

    def __init__(self, path: str | None = None):
        self.path = path or find_libggml_base()
        lib = ctypes.CDLL(self.path)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
        ]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        self.lib = lib

    def traits(self, qtype: str | int | QuantType) -> dict:
        """ggml's own block geometry for a type: name, block_size, type_size, is_quantized."""
        t = get_type(qtype)
        tr = self.lib.ggml_get_type_traits(t.id).contents
        return {
            "name": tr.type_name.decode(),
            "block_size": int(tr.blck_size),
            "type_size": int(tr.type_size),
            "is_quantized": bool(tr.is_quantized),
            "has_to_float": bool(tr.to_float),
        }

    def requires_imatrix(self, qtype: str | int | QuantType) -> bool:
        return bool(self.lib.ggml_quantize_requires_imatrix(get_type(qtype).id))

    def row_size(self, qtype: str | int | QuantType, n: int) -> int:
        return int(self.lib.ggml_row_size(get_type(qtype).id, n))

    def quantize(
        self, x: np.ndarray, qtype: str | int | QuantType, imatrix: np.ndarray | None = None
    ) -> np.ndarray:
        """One ``ggml_quantize_chunk`` call over all rows: (rows, cols) float32 -> uint8 rows."""
        t = get_type(qtype)
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows, cols = x.shape
        if imatrix is None and self.requires_imatrix(t):
            raise ValueError(f"{t.name}: ggml aborts without an imatrix")
        row_bytes = self.row_size(t, cols)
        out = np.zeros((rows, row_bytes), dtype=np.uint8)
        w = None
        if imatrix is not None:
            w = np.ascontiguousarray(imatrix, dtype=np.float32)
            assert w.shape == (cols,)
        n = self.lib.ggml_quantize_chunk(
            t.id, x.ctypes.data, out.ctypes.data, 0, rows, cols,
            None if w is None else w.ctypes.data,
        )
        assert n == rows * row_bytes, (n, rows, row_bytes)
        return out

    def dequantize(self, data: np.ndarray, qtype: str | int | QuantType, shape: tuple[int, int]) -> np.ndarray:
        """ggml's ``to_float`` over the whole buffer."""
        t = get_type(qtype)
        tr = self.lib.ggml_get_type_traits(t.id).contents
        if not tr.to_float:
            raise ValueError(f"{t.name}: ggml has no to_float")
        fn = _TO_FLOAT(tr.to_float)
        data = np.ascontiguousarray(data, dtype=np.uint8)
        n = int(np.prod(shape))
        out = np.empty(n, dtype=np.float32)
        fn(data.ctypes.data, out.ctypes.data, n)
        return out.reshape(shape)


@lru_cache(maxsize=1)
def get_oracle() -> GGMLOracle:
    """The process-wide oracle (raises :class:`OracleUnavailable` when llama-cpp-python is absent)."""
    return GGMLOracle()
