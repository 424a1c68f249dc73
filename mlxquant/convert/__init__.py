"""Conversion between Hugging Face folders, GGUF files and MLX folders, one tensor at a time.

``formats`` reads and writes the containers, ``models`` knows each architecture (names,
hyper-parameters, Q/K permutation, norm offsets) and llama.cpp's per-tensor type rules, ``quant``
encodes the blocks. This package ties them together:

- :mod:`.api`: :func:`convert`, which picks the route for (source format, target);
- :mod:`.options`: one options object per target (:class:`GGUFOptions`, :class:`HFOptions`,
  :class:`MLXOptions`);
- one module per route: :mod:`.hf_to_gguf`, :mod:`.gguf_to_gguf`, :mod:`.gguf_to_hf`,
  :mod:`.to_mlx` (any source -> MLX), :mod:`.mlx_to_gguf`, :mod:`.mlx_to_hf`;
- shared pieces: :mod:`.plan` (GGUF tensor order, type plan, encoding), :mod:`.sources` (tensor
  sources of the MLX writer), :mod:`.report` (per-tensor records and the report),
  :mod:`.provenance` (what every output records about its making).

Every output is written under a temporary name and renamed into place when complete, after
every check has passed: nothing is left at the output path on failure.
"""

from .api import ROUTES, convert, source_format
from .options import GGUFOptions, HFOptions, MLXOptions
from .report import ConversionReport, TensorRecord

__all__ = ["convert", "ConversionReport", "TensorRecord", "GGUFOptions", "HFOptions", "MLXOptions",
           "ROUTES", "source_format"]
