"""Compiled CPU codecs: the ggml algorithms as loops compiled by Numba (LLVM), block by block.

Each module mirrors the NumPy module of the same name in ``mlxquant/quant/`` and registers its
codecs with ``backend="numba"``. The NumPy codecs stay the readable reference (and what the MLX
twins follow); these exist for speed on CPUs, where a vectorized NumPy search over blocks cannot
match C: the loops here are ggml's own, in ggml's float32 order, so the bytes are the same (the
tests compare every type with llama.cpp on every input family). Kernels release the GIL, so the
API's row-chunk thread pool runs them on every core; each compiles on first use (about 1-3 s)
and is cached on disk by Numba (``NUMBA_CACHE_DIR`` chooses where).
"""
