"""mlxquant: quantize and convert language models between MLX and GGUF, bit-exact with llama.cpp.

The public names load on first use (PEP 562): ``import mlxquant`` costs nothing, so the
``mlxquant`` command can install its signal handlers before NumPy, Numba and MLX load, and a
Ctrl-C during start-up never shows a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# OpenBLAS's idle worker threads spin 2^28 cycles (~0.1 s) after each call before they sleep; a
# 2-thread BLAS prefill left them spinning through the first decode steps, whose compiled kernels
# then waited for a core: the first step after a prompt took ~100 ms instead of 5. 2^20 cycles
# (~0.3 ms) cost the prompts nothing measurable. Read once, when NumPy loads OpenBLAS: set here
# before any of mlxquant's imports load NumPy (a user's own setting wins). See runtime/blas.py.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

# public name -> module that defines it (relative to this package)
_LAZY: dict[str, str] = {
    "quantize": ".quant",
    "dequantize": ".quant",
    "get_type": ".quant",
    "codecs_for": ".quant",
    "TYPES": ".quant",
    "QuantType": ".quant",
    "convert": ".convert",
    "ConversionReport": ".convert",
    "inspect": ".formats.inspect",
    "imatrix": ".calib",
    "MlxquantError": ".errors",
    "QuantInputError": ".errors",
    "QuantTypeError": ".errors",
}

__all__ = [
    "quantize",
    "dequantize",
    "convert",
    "ConversionReport",
    "inspect",
    "imatrix",
    "get_type",
    "codecs_for",
    "TYPES",
    "QuantType",
    "MlxquantError",
    "QuantInputError",
    "QuantTypeError",
    "errors",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import errors
    from .convert import ConversionReport, convert
    from .errors import MlxquantError, QuantInputError, QuantTypeError
    from .calib import imatrix
    from .formats.inspect import inspect
    from .quant import TYPES, QuantType, codecs_for, dequantize, get_type, quantize


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module(".errors", __name__)
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    if name != "convert":
        globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})


class _Package(types.ModuleType):
    """``mlxquant.convert`` is the function, as when this package imported it eagerly: importing
    the ``mlxquant.convert`` subpackage binds the module to this attribute, which is ignored."""

    @property
    def convert(self) -> Any:
        return getattr(importlib.import_module(".convert", __name__), "convert")

    @convert.setter
    def convert(self, value: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package
