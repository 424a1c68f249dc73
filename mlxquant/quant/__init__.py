"""Codecs for GGML block types (NumPy reference) behind :func:`quantize` / :func:`dequantize`."""

from .api import dequantize, quantize
from .types import TYPES, QuantType, codecs_for, get_type

__all__ = ["quantize", "dequantize", "TYPES", "QuantType", "get_type", "codecs_for"]
