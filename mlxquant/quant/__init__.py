"""Codecs for GGML block types behind :func:`quantize` / :func:`dequantize`.

The registry (:mod:`.types`, :mod:`.backends`, the :class:`~.codec.Codec` base, output
:mod:`.buffers`) and the API (:mod:`.api`, MLX's own formats in :mod:`.mlx_native`, GGUF⇄MLX
transcoding in :mod:`.transcode`) sit here; the codecs themselves are three parallel packages
with the same file names per type family: :mod:`.numpy` (reference), :mod:`.jit` (compiled CPU
kernels) and :mod:`.mlx` (MLX arrays).
"""

from .api import dequantize, quantize
from .backends import codecs_for
from .types import TYPES, QuantType, get_type

__all__ = ["quantize", "dequantize", "TYPES", "QuantType", "get_type", "codecs_for"]
