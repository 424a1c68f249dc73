"""Public quantize/dequantize: validation, backend choice, and dispatch to a codec."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np

from ..errors import QuantInputError, QuantTypeError
from .mlx_native import dequantize_mlx, parse_mlx_format, quantize_mlx
from .buffers import EMPTY_WEIGHTS, destination, is_view_of
from .backends import codecs_for, get_codec
from .types import QuantType, get_type

log = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "numba", "mlx")

# Rows are split into chunks of about this many weights: small enough that a chunk's working
# arrays stay in a core's L2 cache, large enough that per-chunk Python overhead is small.
# Quantizers keep several arrays per weight alive (the K-quant searches chunk further inside);
# dequantizers write float32 output, for which a smaller chunk keeps the output in cache.
# Chunks run on a thread pool (NumPy releases the GIL inside its loops); results do not depend
# on the split, since ggml works row by row.
CHUNK_WEIGHTS = 1 << 18
DEQUANT_CHUNK_WEIGHTS = 1 << 18
# Below this many weights a matrix is not split for threads (the pool's hand-off costs more).
MIN_PARALLEL_WEIGHTS = 1 << 15
CHUNKS_PER_THREAD = 4
PARALLEL_MIN_SECONDS = 5e-4
# Until a codec's cost is measured, calls up to this many weights run on one thread (to measure).
PROBE_WEIGHTS = 1 << 22
# (codec, direction) -> best single-thread seconds per weight seen in this process
_RATE: dict[tuple, float] = {}
_SEEN: set[tuple] = set()  # keys whose first (uncounted) single-thread call has run


_CPUS = os.cpu_count() or 1


def _threads() -> int:
    env = os.environ.get("MLXQUANT_THREADS")
    if env:
        return max(1, int(env))
    return _CPUS


# One pool for the process (starting threads costs ~0.1 ms a call, which shows on small
# tensors), rebuilt when the thread count changes or after a fork (the child has no threads).
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()
_IN_WORKER = threading.local()


@contextlib.contextmanager
def on_this_thread() -> Iterator[None]:
    """Codec calls made inside run on the calling thread alone, not on the pool: for callers
    that run several small calls side by side on threads of their own (the allocator's
    distortions), where handing each call's chunks to the pool would only add hand-offs."""
    was = getattr(_IN_WORKER, "on", False)
    _IN_WORKER.on = True
    try:
        yield
    finally:
        _IN_WORKER.on = was


def _pool(n: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[:2] != (n, os.getpid()):
            if _POOL is not None and _POOL[1] == os.getpid():
                _POOL[2].shutdown(wait=False)
            _POOL = (n, os.getpid(), ThreadPoolExecutor(n, thread_name_prefix="mlxquant"))
        return _POOL[2]


def _chunked(
    fn: Callable[[int, int, np.ndarray], None], rows: int, cols: int, out: np.ndarray,
    per_chunk: int | None = None, rate_key: tuple | None = None,
) -> np.ndarray:
    """``fn(r0, r1, out[r0:r1])`` (which fills that chunk) over row chunks, in parallel when
    there is enough work.

    ``rate_key`` names the codec and direction: their cost per weight, measured on calls that
    ran on one thread, decides whether a call is worth threads (waking a thread costs ~0.1-0.2
    ms here, so a call that one thread finishes within ``PARALLEL_MIN_SECONDS`` runs on the
    calling thread alone); until it is known, calls up to ``PROBE_WEIGHTS`` run alone.

    ``per_chunk`` (weights) overrides the NumPy codecs' cache-sized chunks: compiled kernels
    stream block by block, so for them a chunk only has to amortize its few microseconds of
    Python overhead. A parallel matrix is cut into at least ``CHUNKS_PER_THREAD`` chunks per
    thread, which the calling thread and the pool's threads take in turn (the caller works
    too: a thread hand-off costs tens of microseconds, as much as a small matrix's decode).
    """
    if per_chunk is None:
        per_chunk = DEQUANT_CHUNK_WEIGHTS if out.dtype == np.float32 else CHUNK_WEIGHTS
    step = max(1, per_chunk // max(cols, 1))
    weights = rows * cols
    seconds_per_weight = _RATE.get(rate_key) if rate_key is not None else None
    if seconds_per_weight is not None:
        alone = seconds_per_weight * weights < PARALLEL_MIN_SECONDS
    else:  # not measured yet: a call of moderate size runs alone once more, to measure
        alone = rate_key is not None and weights <= PROBE_WEIGHTS
    if alone:
        threads = 1  # this codec does it alone faster than threads can be woken
    elif getattr(_IN_WORKER, "on", False):
        threads = 1  # a call from inside a chunk (a codec that quantizes): no pool deadlock
    else:
        threads = _threads()
    if threads > 1 and weights >= 2 * MIN_PARALLEL_WEIGHTS:
        step = min(step, max(1, rows // (threads * CHUNKS_PER_THREAD)))
    spans = [(r, min(rows, r + step)) for r in range(0, rows, step)]
    n = min(threads, len(spans))
    started = time.perf_counter()
    _run_spans(fn, spans, out, n, threads)
    if rate_key is not None and weights and n == 1:
        # one thread's cost per weight, best seen on the calling thread alone (a small call's
        # overhead only raises it); a codec's first call is not counted: it may include
        # Numba loading or compiling the kernel
        spw = (time.perf_counter() - started) / weights
        if rate_key in _SEEN:
            _RATE[rate_key] = min(spw, _RATE.get(rate_key, spw))
        else:
            _SEEN.add(rate_key)
    return out


def _run_spans(fn: Callable[[int, int, np.ndarray], None], spans: list[tuple[int, int]],
               out: np.ndarray, n: int, threads: int) -> None:

    def work(span: tuple[int, int]) -> None:
        fn(span[0], span[1], out[span[0] : span[1]])

    if n <= 1:
        for span in spans:
            work(span)
        return

    lock = threading.Lock()
    state = {"next": 0}
    errors: dict[int, BaseException] = {}

    def take_chunks() -> None:
        was = getattr(_IN_WORKER, "on", False)
        _IN_WORKER.on = True
        try:
            while True:
                with lock:
                    i = state["next"]
                    state["next"] = i + 1
                if i >= len(spans):
                    return
                try:
                    work(spans[i])
                except BaseException as e:  # noqa: BLE001 - re-raised below, first chunk first
                    errors[i] = e
        finally:
            _IN_WORKER.on = was

    helpers = [_pool(threads - 1).submit(take_chunks) for _ in range(n - 1)]
    take_chunks()
    for f in helpers:
        f.result()
    if errors:  # the error of the first failing chunk: it names the first bad row
        raise errors[min(errors)]


def _fill(dst: np.ndarray, produce: Callable[[], np.ndarray]) -> None:
    """``dst[...] = produce()`` for the NumPy codecs: ``dst`` is offered to the codec as its
    output buffer (buffers.destination), so codecs that write straight into it save a copy.
    Overflow to inf/NaN inside a search is part of ggml's arithmetic on huge inputs (silent in
    C); NumPy's error state is per thread, so it is set here, on the thread doing the work."""
    with np.errstate(all="ignore"), destination(dst):
        res = produce()
    if not is_view_of(res, dst):
        dst[...] = res


_LOADING: dict[str, threading.Event] = {}  # type name -> set once its kernels are loaded
_LOADING_LOCK = threading.Lock()


def preload(qtypes, background: bool = True) -> threading.Thread | None:
    """Load the compiled CPU codecs of ``qtypes`` (type names) ahead of use: import them and
    have Numba load each kernel from its disk cache or, the first time on a machine, compile
    it (seconds for a K-quant). A conversion starts this on a thread while it reads headers.
    Returns the thread, or None when ``background`` is False (then done on return, including
    loads another thread had started)."""
    mine, others = [], []
    with _LOADING_LOCK:
        for n in qtypes:
            if n in _LOADING:
                others.append(_LOADING[n])
            else:
                _LOADING[n] = threading.Event()
                mine.append(n)

    def run() -> None:
        for name in mine:
            try:
                t = get_type(name)
                if (t.is_quantized or t.name in ("F16", "BF16")) and "numba" in codecs_for(t.name):
                    x = np.zeros((1, t.block_size), np.float32)
                    # both specializations: without an importance vector (when the type allows)
                    # and with one (a conversion with --imatrix)
                    for w in ([None] if not t.requires_imatrix else []) + (
                            [np.ones(t.block_size, np.float32)] if t.uses_imatrix else []):
                        q = quantize(x, t, imatrix=w, backend="numba")
                    dequantize(q, t, x.shape, backend="numba")
            except Exception:  # noqa: BLE001 - a warm-up; the real call reports errors
                log.debug("preload of %s failed", name, exc_info=True)
            finally:
                _LOADING[name].set()

    if not background:
        run()
        for ev in others:
            ev.wait()
        return None
    th = threading.Thread(target=run, name="mlxquant-preload", daemon=True)
    th.start()
    return th


_READY: set[tuple] = set()  # (codec, direction) whose kernel is compiled or cached


def _kernel_ready(kernel) -> bool:
    """True when a Numba kernel is compiled in this process or cached on disk (a cache load
    takes milliseconds; a compile, seconds). Unknown layouts count as ready."""
    if kernel.signatures:
        return True
    try:
        index = kernel._cache._cache_file._index_path
    except AttributeError:
        return True
    return os.path.exists(index)


def _auto_codec(t: QuantType, backend: str, codec, requested: str, direction: str):
    """``"auto"`` never stalls on a first compile: while a compiled codec has neither machine
    code in this process nor a disk cache, its NumPy twin (the same bytes) does the call and
    the compile runs on a thread. Returns (backend, codec)."""
    if requested != "auto" or backend != "numba" or (codec, direction) in _READY:
        return backend, codec
    kernel = codec.quantize_kernel if direction == "q" else codec.dequantize_kernel
    if _kernel_ready(kernel):
        _READY.add((codec, direction))
        return backend, codec
    preload([t.name])
    return "numpy", get_codec(t, "numpy")


def compiled_row_decoder(qtype: str) -> Callable[[np.ndarray, np.ndarray], None] | None:
    """The compiled decoder ``kernel(data, out)`` (uint8 ``(rows, row_bytes)`` -> float32
    ``(rows, cols)``, releasing the GIL) that :func:`dequantize` with ``backend="auto"`` calls for
    ``qtype`` on this machine, once it is compiled or cached on disk; else None (MLX, NumPy, or
    not ready: use :func:`dequantize`). For callers that decode small tiles many times from
    several threads (the runtime's prompt tiles), where the checks and dispatch of each
    :func:`dequantize` call cost more than the decode and hold the GIL."""
    fmt, t, backend, codec = _resolve(qtype, "auto")
    kernel = getattr(codec, "dequantize_kernel", None)
    if fmt is not None or backend != "numba" or kernel is None:
        return None
    if (codec, "dq") not in _READY:
        if not _kernel_ready(kernel):
            return None
        _READY.add((codec, "dq"))
    return kernel


def _is_mx(a: object) -> bool:
    """True for an ``mlx.core.array`` (without importing MLX when it isn't loaded)."""
    mx = sys.modules.get("mlx.core")
    return mx is not None and isinstance(a, mx.array)


@lru_cache(maxsize=1)
def mlx_on_gpu() -> bool:
    """True when MLX is installed and its default device is a GPU (Metal, or CUDA)."""
    try:
        import mlx.core as mx
    except ImportError:
        return False
    try:
        return mx.default_device().type == mx.DeviceType.gpu
    except Exception:  # a broken GPU runtime must not break the CPU path
        return False


def _backend(backend: str, t: QuantType) -> str:
    """Resolve ``backend``: "auto" is MLX where MLX runs on a GPU and has the type; else the
    compiled CPU codec (Numba) where there is one, else NumPy. On a CPU both are faster than MLX
    (benchmarks/codecs.py)."""
    if backend not in BACKENDS:
        raise QuantTypeError(f"{t.name}: unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "auto":
        return _auto_backend(t.name)
    return backend


@lru_cache(maxsize=256)
def _resolve(qtype: str | int | QuantType, backend: str):
    """(MLX format or None, type, backend, codec) for a call's ``qtype`` and ``backend``: the
    lookups every call repeats (errors are raised, not cached)."""
    fmt = parse_mlx_format(qtype)
    if fmt is not None:
        if backend not in BACKENDS:
            raise QuantTypeError(f"{fmt.name}: unknown backend {backend!r}")
        return fmt, None, backend, None
    t = get_type(qtype)
    b = _backend(backend, t)
    try:
        codec = get_codec(t, b)
    except QuantTypeError:
        codec = None  # raised by the call, after its input checks (they name the problem first)
    return None, t, b, codec


@lru_cache(maxsize=None)
def _auto_backend(name: str) -> str:
    have = codecs_for(name)
    if mlx_on_gpu() and "mlx" in have:
        return "mlx"
    return "numba" if "numba" in have else "numpy"


def _check_matrix(x, t: QuantType, backend: str):
    """Validate a (rows, cols) float matrix; return it as float32 (an mx.array for MLX)."""
    if _is_mx(x):
        import mlx.core as mx

        shape, floating = tuple(x.shape), mx.issubdtype(x.dtype, mx.floating)
    else:
        x = np.asarray(x)
        shape, floating = x.shape, np.issubdtype(x.dtype, np.floating)
    if len(shape) != 2:
        raise QuantInputError(f"{t.name}: expected a 2-D (rows, cols) array, got shape {shape}")
    if not floating:
        raise QuantInputError(f"{t.name}: expected a float array, got dtype {x.dtype}")
    rows, cols = shape
    if cols == 0 or cols % t.block_size:
        raise QuantInputError(
            f"{t.name}: row length {cols} is not a positive multiple of the block size {t.block_size}"
        )
    if backend == "mlx":
        import mlx.core as mx

        x = (x if _is_mx(x) else mx.array(x)).astype(mx.float32)
        bad = mx.logical_not(mx.isfinite(x)).reshape(-1)
        if mx.any(bad).item():
            i = int(mx.argmax(bad).item())
            raise QuantInputError(
                f"{t.name}: input contains NaN or Inf (first at row {i // cols}, col {i % cols})"
            )
        return x
    # NumPy: finiteness is checked per row chunk inside the thread pool (_check_finite), so the
    # check runs in parallel and while the chunk is in cache.
    return np.ascontiguousarray(np.array(x) if _is_mx(x) else x, dtype=np.float32)


def _check_finite(x: np.ndarray, t: QuantType, row0: int, compiled: bool = False) -> None:
    """Raise if rows ``row0...`` of a matrix (the chunk ``x``, C-contiguous float32) hold NaN or
    Inf. ``compiled``: use the one-pass compiled scan (the compiled codecs are fast enough for
    NumPy's two passes to show)."""
    if compiled:
        from .jit.numeric import first_nonfinite

        i = int(first_nonfinite(x))
        if i < 0:
            return
        r, c = divmod(i, x.shape[1])
    else:
        finite = np.isfinite(x)
        if finite.all():
            return
        r, c = np.argwhere(~finite)[0]
    raise QuantInputError(f"{t.name}: input contains NaN or Inf (first at row {row0 + r}, col {c})")


def _as_mx(a: np.ndarray):
    import mlx.core as mx

    return mx.array(a)


def _check_imatrix(imatrix: np.ndarray | None, cols: int, t: QuantType) -> np.ndarray | None:
    if imatrix is None:
        if t.requires_imatrix:
            raise QuantInputError(f"{t.name}: this type needs an importance matrix (imatrix)")
        return None
    w = np.array(imatrix) if _is_mx(imatrix) else np.asarray(imatrix)
    if w.ndim != 1 or w.shape[0] != cols:
        raise QuantInputError(
            f"{t.name}: imatrix must have shape ({cols},) to match the row length, got {w.shape}"
        )
    if not np.issubdtype(w.dtype, np.floating) and not np.issubdtype(w.dtype, np.integer):
        raise QuantInputError(f"{t.name}: imatrix must be numeric, got dtype {w.dtype}")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise QuantInputError(f"{t.name}: imatrix contains NaN or Inf")
    if (w < 0).any():
        raise QuantInputError(f"{t.name}: imatrix contains negative values (importances are >= 0)")
    return w


def quantize(
    x: np.ndarray,
    qtype: str | int | QuantType,
    *,
    imatrix: np.ndarray | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Quantize a float matrix into GGUF blocks, byte-identical to llama.cpp's quantizer.

    Args:
        x: float array of shape ``(rows, cols)``; ``cols`` must be a multiple of the type's block
            size. Converted to float32 first (as llama.cpp does).
        qtype: a GGML type name such as ``"Q4_K"`` (case-insensitive) or its numeric id; or an
            MLX format (``"MLX_Q4_G64"``, ``"mlx4"``, ``"MLX_MXFP4"``, ...: see
            :mod:`mlxquant.quant.mlx_native`), which returns ``mx.quantize``'s
            (weight, scales, biases) as an ``MLXQuantized``.
        imatrix: optional per-column importance weights, shape ``(cols,)``, non-negative (what
            llama.cpp's imatrix tool gives). Used by the types whose ggml quantizer takes one and
            ignored by the others, as in llama.cpp.
        backend: ``"auto"`` (default: MLX where MLX runs on a GPU; else the compiled CPU codec,
            else NumPy), ``"numpy"`` (the vectorized reference), ``"numba"`` (ggml's loops
            compiled for the CPU: :mod:`mlxquant.quant.jit`) or ``"mlx"``. Every backend gives
            the same bytes.

    Returns:
        uint8 ``(rows, row_bytes)`` in GGUF block layout; an ``mx.array`` when ``x`` is one (it
        stays in unified memory on the MLX backend), else a NumPy array.

    Raises:
        QuantTypeError: unknown type, or no codec for it.
        QuantInputError: wrong shape, non-float or non-finite input, bad imatrix.
    """
    fmt, t, resolved, codec = _resolve(qtype, backend)
    if fmt is not None:
        return quantize_mlx(x, fmt, backend)
    if codec is not None:
        resolved, codec = _auto_codec(t, resolved, codec, backend, "q")
    backend = resolved
    as_mx = _is_mx(x)
    x = _check_matrix(x, t, backend)
    rows, cols = x.shape
    w = _check_imatrix(imatrix, cols, t)
    codec = codec or get_codec(t, backend)
    if backend == "mlx":
        import mlx.core as mx

        out = codec.quantize_rows(x, None if w is None else mx.array(w))
        return out if as_mx else np.array(out)
    out = np.empty((rows, t.row_bytes(cols)), dtype=np.uint8)
    kernel = getattr(codec, "quantize_kernel", None)  # a compiled codec: straight into ``out``
    kw = w if w is not None and t.uses_imatrix else EMPTY_WEIGHTS

    fused_check = kernel is not None and codec.checks_finite

    def encode(r0: int, r1: int, dst: np.ndarray) -> None:
        chunk = x[r0:r1]
        if fused_check:  # the kernel reports NaN/Inf in its own pass; then find the first
            if kernel(chunk, kw, dst):
                _check_finite(chunk, t, r0, True)
            return
        _check_finite(chunk, t, r0, kernel is not None)  # before the codec sees the chunk
        if kernel is not None:
            kernel(chunk, kw, dst)
        else:
            _fill(dst, lambda: codec.quantize_rows(chunk, w))

    # a failing chunk raises from _chunked; chunks are awaited in row order, so the error names
    # the first bad row of the matrix
    out = _chunked(encode, rows, cols, out, codec.chunk_weights, (codec, "q", w is not None))
    return _as_mx(out) if as_mx else out


def _check_out(out: object, shape: tuple[int, ...], name: str) -> np.ndarray:
    if (not isinstance(out, np.ndarray) or out.dtype != np.float32 or not out.flags.c_contiguous
            or not out.flags.writeable or out.shape != shape):
        raise QuantInputError(f"{name}: out= must be a writable C-contiguous float32 array of shape {shape}")
    return out


def dequantize(
    data: np.ndarray | bytes | bytearray | memoryview,
    qtype: str | int | QuantType,
    shape: tuple[int, ...],
    *,
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode GGUF blocks to float32.

    Args:
        data: the raw bytes (any array shape; read as a flat uint8 buffer).
        qtype: the GGML type of ``data``.
        shape: the logical tensor shape; its last dimension must be a multiple of the block size.

        backend: as for :func:`quantize`.
        out: a C-contiguous float32 NumPy array of ``shape`` to decode into (NumPy input only;
            e.g. a reused scratch tile), returned.

    Returns:
        float32 array of ``shape``: an ``mx.array`` when ``data`` is one, else NumPy.
    """
    fmt, t, resolved, codec = _resolve(qtype, backend)
    if out is not None and _is_mx(data):
        raise QuantInputError(f"{qtype}: out= takes NumPy input only")
    if fmt is not None:
        res = dequantize_mlx(data, fmt, shape, backend)
        if out is None:
            return res
        _check_out(out, tuple(res.shape), str(qtype))[...] = np.asarray(res)
        return out
    if codec is not None:
        resolved, codec = _auto_codec(t, resolved, codec, backend, "dq")
    backend = resolved
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    if not shape or any(s < 0 for s in shape):
        raise QuantInputError(f"{t.name}: invalid shape {shape}")
    cols = shape[-1]
    if cols == 0 or cols % t.block_size:
        raise QuantInputError(
            f"{t.name}: last dimension {cols} is not a positive multiple of the block size {t.block_size}"
        )
    rows = math.prod(shape[:-1])
    as_mx = _is_mx(data)
    if as_mx and backend == "mlx":
        import mlx.core as mx

        if data.dtype != mx.uint8:
            raise QuantInputError(f"{t.name}: expected uint8 bytes, got dtype {data.dtype}")
        buf = data
    elif as_mx:
        buf = np.array(data)
    elif isinstance(data, np.ndarray):
        buf = data
    else:
        buf = np.frombuffer(data, dtype=np.uint8)
    if buf.dtype != np.uint8 and not (as_mx and backend == "mlx"):
        raise QuantInputError(f"{t.name}: expected uint8 bytes, got dtype {buf.dtype}")
    expected = rows * t.row_bytes(cols)
    if buf.size != expected:
        raise QuantInputError(
            f"{t.name}: {buf.size} bytes given, shape {shape} needs {expected}"
        )
    codec = codec or get_codec(t, backend)
    if backend == "mlx":
        import mlx.core as mx

        buf = (buf if _is_mx(buf) else mx.array(buf)).reshape(rows, t.row_bytes(cols))
        res = codec.dequantize_rows(buf, cols).reshape(shape)
        if out is not None:
            _check_out(out, shape, t.name)[...] = np.array(res)
            return out
        return res if as_mx else np.array(res)
    buf = np.ascontiguousarray(buf).reshape(rows, t.row_bytes(cols))
    given = out
    out = np.empty((rows, cols), dtype=np.float32) if out is None else \
        _check_out(out, shape, t.name).reshape(rows, cols)
    kernel = getattr(codec, "dequantize_kernel", None)

    def decode(r0: int, r1: int, dst: np.ndarray) -> None:
        if kernel is not None:
            kernel(buf[r0:r1], dst)
        else:
            _fill(dst, lambda: codec.dequantize_rows(buf[r0:r1], cols))

    out = _chunked(decode, rows, cols, out, codec.chunk_weights, (codec, "dq")).reshape(shape)
    if given is not None:
        return given
    return _as_mx(out) if as_mx else out
