"""NumPy codecs: the readable reference, vectorized over blocks, byte-identical to ggml.

Each module holds one family of GGML types and registers its codecs with ``backend="numpy"``;
:mod:`mlxquant.quant.jit` (compiled CPU kernels) and :mod:`mlxquant.quant.mlx` (``mx.array``)
hold the same families under the same file names. ``numeric`` has the float32 arithmetic that
keeps ggml's order, ``search_scale`` / ``search_scale_min`` the K-quant scale searches.

(``import numpy`` inside this package still means NumPy: imports are absolute.)
"""
