"""Per-type speed of the runtime's fused quantized kernels (mlxquant.runtime.kernels) against this
machine's memory read bandwidth, and the fused-vs-tiled crossover for several activation rows.

    python benchmarks/kernels.py [--mbytes 96] [--types Q4_K,Q8_0,...] [--threads 1,2]

Bandwidth: the median of timed passes of a compiled sum over a uint64 buffer of ``--mbytes`` x 4 MB
(far past the 32 MB L3 here), split over 1 and over 2 threads as the kernels split a matrix
(``np.sum`` runs on one thread and is bound by its own arithmetic: 22 GB/s here, below what one
Q8_0 kernel thread streams). Decode: ``QuantMatrix.matmul`` of one float32 row with a matrix of about
``--mbytes`` MB of weight bytes (one quantized 1024 x 4096 slab repeated, so the bytes come from
DRAM, not the cache); the figure is GB/s of weight bytes streamed and its fraction of the read
bandwidth with the same thread count (1.0 = the physical limit). Then, for Q4_K and Q8_0, ms per product of T rows through
the fused kernel and through decoded tiles + sgemm (what ``FUSED_MAX_ROWS`` chooses between).
The machine's 1-minute load average is printed: on the shared 2-core machines, other jobs slow
every figure (2 threads most).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import mlxquant  # noqa: F401  (before NumPy: it shortens OpenBLAS's idle spin, see runtime/blas.py)
import numpy as np


def _median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def read_bandwidth(mbytes: int, threads: int) -> float:
    """Bytes/s of a compiled sum over ``4 * mbytes`` MB of uint64 words split over ``threads``
    threads (each streams its own part, as the decode kernels do)."""
    import numba
    from numba import njit, prange

    @njit(parallel=True, cache=False)
    def total(words, parts):
        n = words.shape[0]
        out = np.zeros(parts, np.uint64)
        for p in prange(parts):
            part = words[p * n // parts:(p + 1) * n // parts]
            s = np.uint64(0)
            for i in range(part.shape[0]):
                s += part[i]
            out[p] = s
        return out.sum()

    buf = np.ones((4 * mbytes) << 17, np.uint64)
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        return buf.nbytes / _median_time(lambda: total(buf, threads), 5)
    finally:
        numba.set_num_threads(old)


def main() -> None:
    from mlxquant.quant import quantize
    from mlxquant.quant.types import TYPES
    from mlxquant.runtime.kernels import DOTS, QuantMatrix, set_kernel_threads
    from mlxquant.runtime.kernels import fused, idots
    from mlxquant.runtime.kernels.matrix import FUSED_MAX_ROWS, launch, linear, row_chunk

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbytes", type=int, default=96)
    ap.add_argument("--types", default=",".join(DOTS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    bw = {n: read_bandwidth(args.mbytes, n) for n in threads}
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}; read bandwidth (compiled sum over "
          f"{4 * args.mbytes} MB): " + ", ".join(f"{n} thread(s) {b / 1e9:.2f} GB/s" for n, b in bw.items()))
    rng = np.random.default_rng(0)
    cols = 4096
    slab = rng.standard_normal((1024, cols)).astype(np.float32)
    x = rng.standard_normal((1, cols)).astype(np.float32)
    print(f"integer-dot kernels (runtime/kernels/idots.py: Q2_K-Q6_K, IQ4_XS, Q4_0-Q8_0, IQ4_NL, MXFP4): "
          f"{'in use' if idots.AVAILABLE else 'not on this CPU'}; '(float)' rows: the float kernels they replace")
    print(f"{'type':<12} {'MB':>6} " + " ".join(f"{f'{n} thr GB/s (frac)':>22}" for n in threads))
    rows = [(t, None) for t in args.types.split(",")]
    if idots.AVAILABLE:
        rows += [(t, getattr(fused, f"fused_{t.lower()}")) for t in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL",
                                                                   "MXFP4")
                 if t in args.types.split(",")]
    for t, kernel in rows:
        imatrix = np.ones(cols, np.float32) if TYPES[t].requires_imatrix else None  # IQ1_S, IQ2_XXS/XS
        raw = np.asarray(quantize(slab, t, imatrix=imatrix)).reshape(slab.shape[0], -1)
        reps = max(1, -(-(args.mbytes << 20) // raw.nbytes))
        m = QuantMatrix(np.ascontiguousarray(np.tile(raw, (reps, 1))), t, cols, t)
        y = np.empty((1, m.shape[0]), np.float32)
        if t == "F32":  # the runtime keeps F32 weights as arrays: linear() takes them to fused_f32
            w32 = m.raw.view(np.float32)
        cells = []
        for n in threads:
            old = set_kernel_threads(n)
            if t == "F32":
                dt = _median_time(lambda: linear(x, w32), args.repeats)
            elif kernel is None:
                dt = _median_time(lambda: m.matmul(x), args.repeats)
            else:
                dt = _median_time(lambda: launch(kernel, m.raw, x, y, row_chunk(m.shape[0]), 16), args.repeats)
            set_kernel_threads(old)
            gbs = m.nbytes / dt
            cells.append(f"{gbs / 1e9:>13.2f} ({gbs / bw[n]:4.2f})")
        name = t if kernel is None else f"{t} (float)"
        print(f"{name:<12} {m.nbytes / 1e6:>6.0f} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    print(f"\nfused kernel vs decoded tiles + sgemm, ms per product ({threads[-1]} thread(s); "
          f"FUSED_MAX_ROWS = {FUSED_MAX_ROWS}); load {os.getloadavg()[0]:.2f}")
    for t in ("Q4_K", "Q8_0", "Q3_K"):
        raw = np.asarray(quantize(slab, t)).reshape(slab.shape[0], -1)
        m = QuantMatrix(raw, t, cols, t)
        old = set_kernel_threads(threads[-1])
        for T in (1, 2, 4, 8, 16, 32):
            xt = rng.standard_normal((T, cols)).astype(np.float32)
            fused = _median_time(lambda: m.kernel.fused(m.raw, xt, np.empty((T, 1024), np.float32), 64, 16),
                                 args.repeats)
            tiled = _median_time(lambda: m._tiled(xt), args.repeats)
            print(f"{t:<6} T={T:<3} fused {1e3 * fused:7.2f}  tiled {1e3 * tiled:7.2f}")
        set_kernel_threads(old)


if __name__ == "__main__":
    main()
