"""mlxquant: quantize and convert language models between MLX and GGUF, bit-exact with llama.cpp."""

from .errors import MlxquantError, QuantInputError, QuantTypeError
from .quant import TYPES, QuantType, codecs_for, dequantize, get_type, quantize
from .convert import ConversionReport, convert
from .formats.inspect import inspect

__version__ = "0.1.0"

__all__ = [
    "quantize",
    "dequantize",
    "convert",
    "ConversionReport",
    "inspect",
    "get_type",
    "codecs_for",
    "TYPES",
    "QuantType",
    "MlxquantError",
    "QuantInputError",
    "QuantTypeError",
    "__version__",
]
