"""A weight matrix kept in its GGUF blocks, multiplied without widening it: :class:`QuantMatrix`.

``QuantMatrix.matmul(x)`` is ``x @ W.T`` for float32 activations ``x`` ``(T, cols)``, ``W`` in
Hugging Face row order, while the bytes stay as stored (typically a slice of the memory-mapped
GGUF file, so resident memory is the file's pages, shared with the page cache):

- few activation rows (decoding; ``T <= FUSED_MAX_ROWS``): the fused kernel of :mod:`.fused`
  (codes decoded in registers, one pass over the weight bytes, rows split over Numba's threads);
- many rows (a prompt): tiles of about ``TILE_BYTES`` of float32 rows are decoded by the codecs
  (:func:`mlxquant.quant.dequantize`, the same values as a widened model) and multiplied by
  NumPy's BLAS (sgemm): the decode costs ``rows x cols`` once per call, the product ``T`` times
  more, so BLAS's speed wins there (``benchmarks/kernels.py`` measures both). With
  :func:`tile_threads` > 1 (a generation's prefill, see
  :class:`~mlxquant.runtime.blas.ThreadChooser`) the rows are split over that many threads, each
  decoding its own tiles into its own reused scratch buffer and calling one-thread BLAS
  (:meth:`QuantMatrix.tile_rows`); :func:`gated` does a gated MLP's two products and its
  activation that way;
- every type with a codec has a fused kernel; the IQ1/IQ2/IQ3 grids and NVFP4 have no dot
  product here, so theirs decodes each row with the codec and dots it (:func:`.fused._decoded`);
  rows a kernel cannot take (not a multiple of its block) go through the tiles for any ``T``.

GGUF may store rows in another order than HF (llama's Q/K heads are interleaved,
:func:`mlxquant.models.llama.permute_qk`): ``out_rows[i]`` is the stored row holding HF row ``i``;
the product is computed in stored order and its columns gathered (``T x rows`` floats, not the
weights).

Threads: the fused kernel runs on :func:`kernel_threads` threads, 1 unless the caller's thread
asked for more (:func:`set_kernel_threads`; :class:`mlxquant.runtime.blas.ThreadChooser` does,
from measured times). As with OpenBLAS (see :mod:`mlxquant.runtime.blas`), a multi-threaded launch
waits for its slowest thread: with other jobs on the cores one matrix-vector product took 16 ms
on 2 threads instead of 0.3 ms on 1 here. Numba's thread pool is entered by one caller at a time
(``_LAUNCH``): its workqueue layer aborts on concurrent launches, and the runtime may run forward
passes on several threads (imatrix).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Callable

import numba
import numpy as np

from ...quant import dequantize
from ...quant.api import compiled_row_decoder, on_this_thread
from .fused import GROUPED, fused_f32, kernel_for

# activation rows up to which the fused kernel beat decode + sgemm (benchmarks/kernels.py, 2 threads,
# 1024 x 4096: Q4_K/Q8_0 up to 32 rows and more, Q3_K's Numba loops up to ~12)
FUSED_MAX_ROWS = 8
# float32 bytes of one decoded tile: 4 MiB (fewer, larger sgemm calls) ran SmolLM2 Q8_0's 256-token
# prompt ~8% faster than 1 MiB (the L2 of a core here); 16 MiB no faster
TILE_BYTES = 4 << 20
# multiply-adds below which a prompt's product (or attention) stays on one thread: handing half to
# another thread costs ~30 us and more under the GIL; a 256 x 256 x 256 product ran slower split
# (245 vs 209 us), 768 x 256 x 256 faster (392 vs 497 us)
SPLIT_MIN_MACS = 1 << 25
_LAUNCH = threading.Lock()
_LOCAL = threading.local()


def kernel_threads() -> int:
    """Threads the fused kernels use when called from this thread (default 1)."""
    return getattr(_LOCAL, "threads", 1)


def set_kernel_threads(n: int) -> int:
    """Set :func:`kernel_threads` for the calling thread (capped at Numba's pool); returns the
    previous value."""
    old = kernel_threads()
    _LOCAL.threads = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    return old


def tile_threads() -> int:
    """Threads a prompt's tiles are split over when called from this thread (default 1: one
    thread decodes, BLAS multiplies on its own threads; see :meth:`QuantMatrix.matmul`)."""
    return getattr(_LOCAL, "tiles", 1)


def set_tile_threads(n: int) -> int:
    """Set :func:`tile_threads` for the calling thread; returns the previous value. The caller
    keeps NumPy's BLAS on one thread meanwhile (each tile thread calls it, see
    :class:`mlxquant.runtime.blas.ThreadChooser`)."""
    old = tile_threads()
    _LOCAL.tiles = max(1, int(n))
    return old


_HELPERS: list = [None]  # [(workers, pid, ThreadPoolExecutor)]: the tile threads besides the caller
_HELPERS_LOCK = threading.Lock()


def run_parts(fn: Callable[[int], None], n: int) -> None:
    """``fn(0) .. fn(n - 1)`` side by side: ``fn(0)`` on the calling thread, the others on
    helper threads (kept for the process); returns when all are done, raising the first error.
    For NumPy/BLAS/compiled work that releases the GIL."""
    if n <= 1:
        fn(0)
        return
    with _HELPERS_LOCK:
        held = _HELPERS[0]
        if held is None or held[0] < n - 1 or held[1] != os.getpid():  # a forked child has no threads
            from concurrent.futures import ThreadPoolExecutor

            if held is not None and held[1] == os.getpid():
                held[2].shutdown(wait=False)  # its queued parts still run
            held = _HELPERS[0] = (n - 1, os.getpid(), ThreadPoolExecutor(n - 1, thread_name_prefix="mlxquant-tile"))
        pool = held[2]
    futures = [pool.submit(fn, k) for k in range(1, n)]
    try:
        fn(0)
    finally:
        errors = [f.exception() for f in futures]  # waits for every part before anything is raised
    for e in errors:
        if e is not None:
            raise e


def _scratch(n: int) -> np.ndarray:
    """``n`` float32 of the calling thread's reusable tile buffer."""
    buf = getattr(_LOCAL, "scratch", None)
    if buf is None or buf.size < n:
        buf = _LOCAL.scratch = np.empty(max(n, TILE_BYTES // 4), np.float32)
    return buf[:n]


def row_chunk(rows: int) -> int:
    """Rows per ``prange`` chunk of a fused kernel over ``rows`` rows: about 4 chunks a thread
    (:func:`kernel_threads`), at least 8 rows."""
    return max(8, -(-rows // (4 * getattr(_LOCAL, "threads", 1))))


def launch(fn: Callable[..., Any], *args: Any) -> Any:
    """Call the parallel compiled ``fn(*args)`` on :func:`kernel_threads` threads, one caller at
    a time (``_LAUNCH``, see the module docstring); returns its result."""
    n = getattr(_LOCAL, "threads", 1)
    with _LAUNCH:
        if getattr(_LOCAL, "numba_threads", 0) != n:  # numba's count is per thread too
            numba.set_num_threads(n)
            _LOCAL.numba_threads = n
        return fn(*args)


class QuantMatrix:
    """A ``(rows, cols)`` matrix in GGUF blocks.

    Args:
        raw: the stored bytes, uint8 ``(rows, row_bytes)`` (not copied, unless not C-contiguous).
        qtype: the GGML type name.
        cols: weights per row.
        name: for messages (the tensor's name).
        out_rows: stored row of each HF row (None: the same order).
    """

    def __init__(self, raw: np.ndarray, qtype: str, cols: int, name: str = "",
                 out_rows: np.ndarray | None = None):
        if not raw.flags.c_contiguous:  # the kernels read rows by pointer (file slices are contiguous)
            raw = np.ascontiguousarray(raw)
        self.raw, self.qtype, self.name = raw, qtype, name
        self.shape = (int(raw.shape[0]), int(cols))
        self.dtype = np.dtype(np.float32)  # what it multiplies like
        self.kernel = kernel_for(qtype) if cols % 32 == 0 else None
        if self.kernel is not None and cols % self.kernel.block:
            self.kernel = None
        self.out_rows = None if out_rows is None or np.array_equal(out_rows, np.arange(len(out_rows))) \
            else np.ascontiguousarray(out_rows, dtype=np.intp)
        self._decoder: Callable[[np.ndarray, np.ndarray], None] | None = None

    @property
    def nbytes(self) -> int:
        return int(self.raw.nbytes)

    @property
    def fused(self) -> bool:
        """True when this type has a fused kernel (else every product goes through tiles)."""
        return self.kernel is not None

    def decode(self, r0: int, r1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Stored rows ``r0..r1`` as float32 ``(r1 - r0, cols)`` (into ``out`` when given:
        C-contiguous float32 of that shape). Straight to the compiled decoder once it is loaded
        (:func:`~mlxquant.quant.api.compiled_row_decoder`): a prompt decodes a tile per product
        and thread, and :func:`~mlxquant.quant.dequantize`'s checks held the GIL for as long as
        the decode of a small tile took, so two tile threads waited on each other."""
        if out is not None and out.shape == (r1 - r0, self.shape[1]) and out.dtype == np.float32 \
                and out.flags.c_contiguous and out.flags.writeable:
            dq = self._decoder
            if dq is None:
                dq = self._decoder = compiled_row_decoder(self.qtype)
            if dq is not None:
                dq(self.raw[r0:r1], out)
                return out
        return dequantize(self.raw[r0:r1], self.qtype, (r1 - r0, self.shape[1]), out=out)

    def dequantize(self) -> np.ndarray:
        """The whole matrix as float32 in HF row order."""
        w = self.decode(0, self.shape[0])
        return w if self.out_rows is None else w[self.out_rows]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """HF rows ``idx`` as float32 ``(len(idx), cols)`` (e.g. an embedding lookup): only those
        rows are decoded."""
        idx = np.asarray(idx, dtype=np.intp)
        stored = idx if self.out_rows is None else self.out_rows[idx]
        return dequantize(self.raw[stored], self.qtype, (len(stored), self.shape[1]))

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """``x @ W.T``: float32 ``(T, rows)`` for ``x`` ``(T, cols)`` (or ``(rows,)`` for 1-D)."""
        ready = isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous
        x2 = x if ready else np.ascontiguousarray(x, dtype=np.float32)
        vec = x2.ndim == 1
        x2 = x2.reshape(1, -1) if vec else x2
        if x2.shape[1] != self.shape[1]:
            raise ValueError(f"{self.name}: product of {x2.shape} with a {self.shape} matrix")
        rows, T = self.shape[0], x2.shape[0]
        if self.kernel is not None and T <= FUSED_MAX_ROWS:
            y = np.empty((T, rows), np.float32)
            launch(self.kernel.fused, self.raw, x2, y, row_chunk(rows), 16)
        else:
            y = self._tiled(x2)
        if self.out_rows is not None:
            y = y.take(self.out_rows, axis=1)
        return y[0] if vec else y

    def _tiled(self, x: np.ndarray) -> np.ndarray:
        rows = self.shape[0]
        n = min(tile_threads(), rows // 16) if x.shape[0] * rows * self.shape[1] >= SPLIT_MIN_MACS else 1
        if n <= 1:
            y = np.empty((x.shape[0], rows), np.float32)
            step = max(16, TILE_BYTES // (4 * self.shape[1]))
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                tile = _scratch((r1 - r0) * self.shape[1]).reshape(r1 - r0, self.shape[1])
                np.matmul(x, self.decode(r0, r1, tile).T, out=y[:, r0:r1])
            return y
        return _split_rows(x, (self,), n)[0]

    def tile_rows(self, x: np.ndarray, r0: int, r1: int, out: np.ndarray, alone: bool = True) -> None:
        """``out = x @ W[r0:r1].T`` (stored rows): tiles decoded into this thread's scratch buffer,
        multiplied by BLAS, on the calling thread alone (``alone``: BLAS on one thread, see
        :func:`set_tile_threads`) or with BLAS on its own threads. A prompt's tile threads each take
        their own rows: nothing one core writes was just read by the other (see
        :class:`mlxquant.runtime.blas.ThreadChooser`)."""
        cols = self.shape[1]
        step = max(16, TILE_BYTES // (4 * cols))
        with on_this_thread() if alone else contextlib.nullcontext():
            for a in range(r0, r1, step):
                b = min(r1, a + step)
                w = self.decode(a, b, _scratch((b - a) * cols).reshape(b - a, cols))
                np.matmul(x, w.T, out=out[:, a - r0:b - r0])

    def __repr__(self) -> str:
        return f"QuantMatrix({self.name!r}, {self.qtype}, {self.shape})"


def kernel_rows(w: "np.ndarray | QuantMatrix") -> bool:
    """True when :func:`linear` multiplies few rows by ``w`` with the compiled kernels (on
    :func:`kernel_threads`), False when with BLAS."""
    if isinstance(w, QuantMatrix):
        return w.fused
    return (isinstance(w, np.ndarray) and w.dtype == np.float32 and w.ndim == 2 and w.flags.c_contiguous
            and w.shape[1] % 32 == 0)


def linear(x: np.ndarray, w: "np.ndarray | QuantMatrix") -> np.ndarray:
    """``x @ w.T`` for a float32 matrix or a :class:`QuantMatrix` (the runtime's linear op).

    A float32 matrix times few rows (a decode step) goes to the compiled row kernel
    (:func:`.fused.fused_f32`), as the quantized types do: on the kernel threads, in place of
    BLAS's sgemv (SmolLM2 F32 decode: see ``benchmarks/runtime.py``); more rows go to BLAS."""
    if isinstance(w, QuantMatrix):
        return w.matmul(x)
    if (kernel_rows(w) and isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous
            and x.shape[-1] == w.shape[1]
            and (x.ndim == 1 or (x.ndim == 2 and x.shape[0] <= FUSED_MAX_ROWS))):
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        y = np.empty((x2.shape[0], w.shape[0]), np.float32)
        launch(fused_f32, w.view(np.uint8), x2, y, row_chunk(w.shape[0]), 16)
        return y[0] if x.ndim == 1 else y
    return x @ w.T


def linear_group(x: np.ndarray, ws: "tuple[np.ndarray | QuantMatrix, ...]") -> list[np.ndarray]:
    """``[x @ w.T for w in ws]`` for two or three matrices sharing the activations ``x`` (``(T,
    cols)``, float32, C order): one launch of a grouped kernel (:data:`.fused.GROUPED`) when they
    are all of one such type, few rows of ``x`` (``T <= FUSED_MAX_ROWS``); else one product each.
    A decode step's q/k/v and gate/up: fewer launches, each waking the threads once. A prompt
    whose tiles are split over threads (:func:`tile_threads`) splits the quantized matrices
    together: each thread takes its share of every matrix's rows, one hand-off for all (the
    small k/v products alone stay below :data:`SPLIT_MIN_MACS`)."""
    split = _split_group(x, ws)
    if split is not None:
        return split
    first = ws[0]
    kernel = GROUPED.get(first.qtype) if isinstance(first, QuantMatrix) else None
    if (kernel is None or len(ws) > 3 or not isinstance(x, np.ndarray) or x.ndim != 2
            or x.shape[0] > FUSED_MAX_ROWS or x.dtype != np.float32 or not x.flags.c_contiguous
            or any(not isinstance(w, QuantMatrix) or w.qtype != first.qtype or w.kernel is None
                   or w.shape[1] != x.shape[1] or not w.raw.flags.c_contiguous
                   or w.raw.flags.writeable != first.raw.flags.writeable for w in ws)):
        return [linear(x, w) for w in ws]
    T = x.shape[0]
    ys = [np.empty((T, w.shape[0]), np.float32) for w in ws]
    raws = [w.raw for w in ws]
    if len(ws) == 2:
        raws.append(first.raw[:0])
        ys.append(np.empty((T, 0), np.float32))
    chunk = row_chunk(sum(w.shape[0] for w in ws))
    launch(kernel, raws[0], raws[1], raws[2], x, ys[0], ys[1], ys[2], chunk)
    return [y if w.out_rows is None else y.take(w.out_rows, axis=1) for y, w in zip(ys, ws)]


def _split_group(x: np.ndarray, ws: "tuple[np.ndarray | QuantMatrix, ...]") -> list[np.ndarray] | None:
    """:func:`linear_group` over the tile threads (None: not a split prompt's products)."""
    n = tile_threads()
    if (n <= 1 or not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[0] <= FUSED_MAX_ROWS
            or x.dtype != np.float32 or not x.flags.c_contiguous
            or any(not isinstance(w, QuantMatrix) or w.shape[1] != x.shape[1] or w.shape[0] < 16 * n for w in ws)
            or x.shape[0] * x.shape[1] * sum(w.shape[0] for w in ws) < SPLIT_MIN_MACS):
        return None
    ys = _split_rows(x, ws, n)
    return [y if w.out_rows is None else y.take(w.out_rows, axis=1) for y, w in zip(ys, ws)]


def _bounds(rows: int, n: int) -> list[int]:
    """Row boundaries of ``n`` near-equal parts of ``rows``."""
    return [rows * k // n for k in range(n + 1)]


def _split_rows(x: np.ndarray, ws: "tuple[QuantMatrix, ...]", n: int) -> list[np.ndarray]:
    """``[x @ w.T for w in ws]`` in stored row order, thread ``k`` of ``n`` (:func:`run_parts`)
    taking part ``k`` of every matrix's rows (:meth:`QuantMatrix.tile_rows`)."""
    ys = [np.empty((x.shape[0], w.shape[0]), np.float32) for w in ws]
    bounds = [_bounds(w.shape[0], n) for w in ws]

    def part(k: int) -> None:
        for w, y, b in zip(ws, ys, bounds):
            w.tile_rows(x, b[k], b[k + 1], y[:, b[k]:b[k + 1]])

    run_parts(part, n)
    return ys


def gated(x: np.ndarray, gate: "np.ndarray | QuantMatrix", up: "np.ndarray | QuantMatrix",
          act: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``act(x @ gate.T) * (x @ up.T)`` (a gated MLP's hidden state). For a prompt and two
    quantized matrices of one shape, each tile thread (:func:`tile_threads`) computes its own
    columns of both products and of the result, a tile of rows at a time: the element-wise work
    is split too, on data the same core just wrote, and only a tile's worth of gate and up
    products is held at once (a 1.1B model's 256-token prompt held 30 MB more without it). The
    same values as the plain form (element-wise operations in the same order)."""
    T = x.shape[0] if x.ndim == 2 else 1
    if (T <= FUSED_MAX_ROWS or not isinstance(gate, QuantMatrix) or not isinstance(up, QuantMatrix)
            or gate.shape != up.shape or gate.out_rows is not None or up.out_rows is not None
            or x.ndim != 2 or x.dtype != np.float32 or not x.flags.c_contiguous or x.shape[1] != gate.shape[1]):
        g, u = linear_group(x, (gate, up))
        h = act(g)
        h *= u
        return h
    rows, cols = gate.shape
    n = tile_threads() if 2 * T * rows * cols >= SPLIT_MIN_MACS else 1
    n = max(1, min(n, rows // 16))
    bounds = _bounds(rows, n)
    step = max(16, TILE_BYTES // (4 * cols))
    hidden = np.empty((T, rows), np.float32)

    def part(k: int) -> None:
        r0, r1 = bounds[k], bounds[k + 1]
        size = T * min(step, r1 - r0)
        gbuf, ubuf = np.empty(size, np.float32), np.empty(size, np.float32)
        for a in range(r0, r1, step):
            b = min(r1, a + step)
            g, u = gbuf[:T * (b - a)].reshape(T, b - a), ubuf[:T * (b - a)].reshape(T, b - a)
            gate.tile_rows(x, a, b, g, n > 1)  # one part: BLAS keeps its threads (eval, imatrix)
            up.tile_rows(x, a, b, u, n > 1)
            h = act(g)
            h *= u
            hidden[:, a:b] = h

    run_parts(part, n)
    return hidden
