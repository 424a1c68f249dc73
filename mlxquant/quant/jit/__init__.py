"""Compiled CPU codecs: the ggml algorithms as loops compiled by Numba (LLVM), block by block.

Each module mirrors the NumPy module of the same name in ``mlxquant/quant/numpy/`` and registers
its codecs with ``backend="numba"``. The NumPy codecs stay the readable reference (and what the MLX
twins follow); these exist for speed on CPUs, where a vectorized NumPy search over blocks cannot
match C: the loops here are ggml's own, in ggml's float32 order, so the bytes are the same (the
tests compare every type with llama.cpp on every input family). Where ggml's loops are short (16 or
32 weights) LLVM would unroll them instead of vectorizing, so several sub-blocks are searched side
by side, one per SIMD lane, each keeping C's order for its own sums (``kquants_affine``,
``kquants_symmetric``), or the block is written as LLVM vector IR (``simd``).

Kernels release the GIL, so the API's row-chunk thread pool runs them on every core. Numba
compiles a kernel on its first use (1.5-14 s per type, K-quants the slowest:
benchmarks/jit_warmup.py) and caches the machine code on disk (``NUMBA_CACHE_DIR`` chooses
where); later processes load it in milliseconds, after Numba's own start-up (~0.5 s).
``backend="auto"`` never waits for a first compile: until the kernel is cached it uses the
NumPy codec (the same bytes) and compiles on a thread.
"""
