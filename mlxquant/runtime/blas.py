"""NumPy's BLAS thread count, read and set at run time (through threadpoolctl).

Why: on a machine with few cores shared with other jobs, a multi-threaded OpenBLAS matrix-vector
product waits at every call for a worker thread that another process has preempted, and its idle
workers spin between calls, stealing the core the main thread needs. In the token-by-token decode
loop (30 layers x 7 small products per token) that made SmolLM2-135M generation 5-20x slower under
load (1.6-5 tokens/s with 2 threads vs 15-20 with 1, two busy processes on two cores), while on an
idle machine 2 threads are faster (34 vs 22 tokens/s); the prefill behaves alike (44-180 vs ~400
prompt tokens/s loaded, 670 vs 440 idle). :class:`ThreadChooser` therefore picks the thread count
of the prefill and of each decode step from measured times (generation only; a bare ``forward``
leaves BLAS as it is). The thread count can change results in the last bits: OpenBLAS splits a
product's sums differently with 1 and 2 threads (logits and imatrix sums differ by ~1e-6
relative), while one thread count repeats exactly; pin ``MLXQUANT_BLAS_THREADS`` where runs must
be compared bit for bit.

OpenBLAS's idle workers spin for a while after every call (2^28 cycles by default), and a spinning
worker holds a core the compiled decode kernels then wait for: right after a 2-thread prefill the
first 2-thread decode steps took 50-100 ms instead of 5 (SmolLM2 Q8_0). ``import mlxquant``
therefore sets ``OPENBLAS_THREAD_TIMEOUT=20`` (2^20 cycles, ~0.3 ms) unless the environment sets
it; OpenBLAS reads it when NumPy loads it, so in a process that imported NumPy before mlxquant
the explorations of :class:`ThreadChooser` (two passes, the faster counts) are what copes.

``MLXQUANT_BLAS_THREADS=N`` fixes the count instead (``0``: leave BLAS alone). Without OpenBLAS
(e.g. Accelerate on macOS, which threadpoolctl does not control) all this does nothing.

The fused quantized kernels (:mod:`mlxquant.runtime.kernels`) have the same problem and follow
the same choice: :meth:`ThreadChooser.step` sets their thread count
(:func:`~mlxquant.runtime.kernels.set_kernel_threads`) to the BLAS count it picked.

Setting and restoring the counts around every decode step cost ~50 us per token (threadpoolctl
reads the count back each time), and every raise of OpenBLAS's count wakes its worker threads:
on a worker thread that made a generation 3-4x slower (issue 16). Inside :func:`thread_session`
(what :func:`~mlxquant.runtime.generate.generate_tokens` opens around a whole generation), a step
therefore sets the counts only when they change and leaves them set; the session restores them
once at its end.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Iterator

from threadpoolctl import ThreadpoolController

_blas = None  # threadpoolctl's view of the BLAS libraries NumPy loaded (made on first use)
_SESSION = threading.local()  # .state: the calling thread's open thread_session (a _Session) or None


def _controller():
    global _blas
    if _blas is None:
        import numpy  # noqa: F401  (loads its BLAS)

        _blas = ThreadpoolController().select(user_api="blas")
    return _blas


def get_blas_threads() -> int | None:
    """NumPy's BLAS thread count (None when threadpoolctl finds no BLAS it can control)."""
    info = _controller().info()
    return int(info[0]["num_threads"]) if info else None


def set_blas_threads(n: int) -> int | None:
    """Set NumPy's BLAS thread count; returns the previous one (None: no controllable BLAS)."""
    old = get_blas_threads()
    if old is not None and n != old:
        _controller().limit(limits=max(1, int(n)))
    return old


def pinned_blas_threads() -> int | None:
    """The count ``MLXQUANT_BLAS_THREADS`` fixes (None: unset, ``0`` or not a number)."""
    try:
        n = int(os.environ.get("MLXQUANT_BLAS_THREADS", ""))
    except ValueError:
        return None
    return n if n > 0 else None


def cpu_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_elsewhere() -> float:
    """Runnable tasks of other processes right now (Linux: ``/proc/loadavg``'s running count minus
    this process's running threads; elsewhere the 1-minute load average minus one)."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        own = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    own += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:
                pass
        return max(0, running - max(1, own))
    except (OSError, ValueError, IndexError):
        try:
            return max(0.0, os.getloadavg()[0] - 1)
        except OSError:
            return 0.0


def _set_counts(n: int, split: bool) -> tuple[int | None, int, int]:
    """Set the calling thread's counts for ``n`` threads; returns the previous (BLAS, kernel,
    tile) counts. ``split``: a prompt's quantized tiles are split over ``n`` threads, each calling
    one-thread BLAS (:func:`~mlxquant.runtime.kernels.matrix.set_tile_threads`); else BLAS runs
    on ``n`` threads itself."""
    from .kernels.matrix import set_kernel_threads, set_tile_threads

    return set_blas_threads(1 if split else n), set_kernel_threads(n), set_tile_threads(n if split else 1)


def _restore_counts(old: tuple[int | None, int, int], blas_now: int | None = None) -> None:
    """Set back what :func:`_set_counts` returned (BLAS only when not already ``blas_now``)."""
    from .kernels.matrix import set_kernel_threads, set_tile_threads

    blas, kernel, tiles = old
    set_kernel_threads(kernel)
    set_tile_threads(tiles)
    if blas is not None and blas != blas_now:
        set_blas_threads(blas)


class _Session:
    """What a :func:`thread_session` restores: the counts before its first change (None: unchanged)."""

    def __init__(self) -> None:
        self.current: tuple[int, bool] | None = None  # what the steps last set
        self.old: tuple[int | None, int, int] | None = None

    def set(self, n: int, split: bool = False) -> None:
        if (n, split) == self.current:
            return
        old = _set_counts(n, split)
        if self.current is None:
            self.old = old
        self.current = (n, split)

    def restore(self) -> None:
        if self.old is not None and self.current is not None:
            n, split = self.current
            _restore_counts(self.old, 1 if split else n)


@contextlib.contextmanager
def thread_session() -> Iterator[None]:
    """Around many :meth:`ThreadChooser.step` calls of the calling thread (e.g. one generation):
    the steps inside set the BLAS and kernel thread counts only when they change and do not
    restore them; the session restores both once when it ends. Nested sessions: the outermost one
    restores."""
    if getattr(_SESSION, "state", None) is not None:
        yield
        return
    state = _SESSION.state = _Session()
    try:
        yield
    finally:
        _SESSION.state = None
        state.restore()


class ThreadChooser:
    """Chooses NumPy's BLAS thread count for one kind of work (prefill, decode step) from measured
    times: :meth:`step` is a context manager around one forward pass.

    It starts on all cores when they are idle at its first pass, else on 1 thread (safe on a
    loaded machine; starting on 1 ran a one-shot generation's prompt and first steps at 0.6x);
    started on all, it tries one thread when its time has risen by half over the fastest pass (load
    arriving) or every ``max_period`` passes. Every ``period`` passes it tries the other
    count (the default, i.e. all cores) for ``explore`` passes, but only when enough cores are idle
    right now (:func:`busy_elsewhere`): under load one multi-threaded decode step took 0.2-1.1 s
    instead of 0.05 s, so blind exploration cost more than it could win. An exploration counts its
    fastest pass: the first pass after a switch pays for it (the first 2-thread decode step after
    a 2-thread BLAS prefill took 17.5 ms instead of 8.7, OpenBLAS's workers still spinning on the
    cores), and one such pass kept SmolLM2's generation on 1 thread, at 0.6x its speed. The current
    choice is timed on every pass, so a slow-down (load arriving) shows at once: when the
    multi-threaded choice gets slower than the last single-thread time, the next pass runs on one
    thread. Explorations therefore only go up (to more threads, to see whether load has left); one
    thread is never re-tried while more threads are faster: those re-tries cost every other 1-thread
    prompt 30% (SmolLM2 F32 prefill 445 instead of 690 tokens/s) and told nothing the timing of the
    current choice does not; fewer threads are re-tried only every ``max_period`` passes, in case
    their last time was taken under load. An exploration that loses doubles ``period`` (up to
    ``max_period``); one that wins resets it. The first pass is not timed: it may compile kernels
    or touch the weights' pages for the first time (a stale, huge 1-thread time would keep more
    threads chosen under load).
    ``MLXQUANT_BLAS_THREADS=N`` fixes the count (``0``: leave BLAS alone).

    A step restores the previous counts when it ends, unless it runs inside a
    :func:`thread_session` (which restores them once, at its end).

    ``split=True`` (a prefill of a model whose linears stay in GGUF blocks): ``n`` threads means
    each product's tiles are split over ``n`` threads, each decoding its own rows and multiplying
    them on one-thread BLAS, BLAS itself kept on one thread
    (:func:`~mlxquant.runtime.kernels.matrix.set_tile_threads`). On the 2 cores here a tile
    decoded by one core right after a 2-thread sgemm had read the previous one took 0.33 ms
    instead of 0.04 (writing cache lines the other core holds), and 2 one-thread sgemms side by
    side beat one 2-thread sgemm: SmolLM2 Q8_0's products took 20 % less time per prompt.
    """

    def __init__(self, period: int = 8, max_period: int = 256, explore: int = 2, split: bool = False):
        self.split = split
        env = os.environ.get("MLXQUANT_BLAS_THREADS", "")
        default = get_blas_threads()
        try:
            fixed = max(0, int(env)) if env else None
        except ValueError:
            fixed = None
        if default is None or fixed == 0:
            self.candidates: list[int] = []
        elif fixed:
            self.candidates = [fixed]
        else:
            self.candidates = [1] + ([default] if default > 1 else [])
        self.base_period, self.period, self.max_period = period, period, max_period
        self.explore = max(1, int(explore))
        self.time: dict[int, float] = {}  # seconds per unit (token), by thread count
        self._since = self._since_down = 0
        self._warm = False  # the first pass (compiles, first touches) is not timed
        self._start: int | None = None  # the count of the first passes
        self._low: dict[int, float] = {}  # the fastest pass seen, by thread count
        self._best = 0  # the choice of the last pass
        self._explore: tuple[int, int, int, float] | None = None  # (count, best, passes left, fastest)

    def _choose(self) -> tuple[int, int | None]:
        """(thread count, current best or None when this pass is not an exploration)."""
        if self._explore is not None:
            return self._explore[0], self._explore[1]
        if not self.time:  # the untimed first pass and the first timed one
            if self._start is None:  # all cores when they are idle now, else one
                top = self.candidates[-1]
                self._start = top if busy_elsewhere() <= cpu_cores() - top else self.candidates[0]
            return self._start, None
        best = min(self.time, key=self.time.__getitem__)
        if best != self._best:  # the choice changed: explorations count from here
            self._best, self._since, self._since_down = best, 0, 0
        self._since += 1
        self._since_down += 1
        if len(self.candidates) > 1:
            other = next(c for c in self.candidates if c != best)
            up = down = False
            if other > best and self._since >= self.period:
                up = busy_elsewhere() <= cpu_cores() - other
                # cores busy at this instant: look again in half a period, not a whole one (a
                # random 1.1B model's 5 prompts once missed every 2-thread exploration: 0.7x)
                self._since = 0 if up else self.period // 2
            # fewer threads: every max_period passes, and at once when never timed and the
            # current count has slowed by half (load arriving after a start on all cores, with no
            # one-thread time to fall back to)
            down = other < best and (self._since_down >= self.max_period
                                     or (other not in self.time and self.time[best] > 1.5 * self._low[best]))
            if up or down:
                self._since = self._since_down = 0
                self._explore = (other, best, self.explore, float("inf"))
                return other, best
        return best, None

    def _record(self, n: int, best: int | None, dt: float) -> None:
        """Time ``dt`` per unit of a pass on ``n`` threads (``best``: see :meth:`_choose`)."""
        if best is None:
            if not self._warm:
                self._warm = True
                return
            prev = self.time.get(n)
            self.time[n] = dt if prev is None else 0.5 * prev + 0.5 * dt
            self._low[n] = min(self._low.get(n, dt), dt)
            return
        count, best, left, fastest = self._explore
        fastest = min(fastest, dt)
        if left > 1:
            self._explore = (count, best, left - 1, fastest)
            return
        self._explore = None
        self.time[n] = fastest
        won = fastest < self.time[best]
        self.period = self.base_period if won else min(self.max_period, 2 * self.period)

    @contextlib.contextmanager
    def step(self, units: int = 1) -> Iterator[None]:
        if not self.candidates:
            yield
            return
        n, best = self._choose()
        session: _Session | None = getattr(_SESSION, "state", None)
        if session is not None:
            session.set(n, self.split)
        else:
            old = _set_counts(n, self.split)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = (time.perf_counter() - t0) / max(1, units)
            if session is None:
                _restore_counts(old)
            self._record(n, best, dt)

    def summary(self, unit: str = "token") -> str:
        if not self.candidates:
            return "BLAS default (not managed)"
        return ", ".join(f"{n} thread(s) {1e3 * t:.2f} ms/{unit}" for n, t in sorted(self.time.items()))
