"""MLX twins of the NumPy codecs: the same algorithms on ``mx.array`` (unified memory, Apple GPU).

Each module mirrors the NumPy module of the same name in ``mlxquant/quant/numpy/`` and registers
its codecs with ``backend="mlx"``. They must give the same bytes as the NumPy reference (and so as
llama.cpp); the tests check that on every input family.
"""
