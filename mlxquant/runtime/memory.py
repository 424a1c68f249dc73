"""Give memory the runtime no longer uses back to the OS: the heap's free memory after a
generation (:func:`trim`), and the compiler's pages once the kernels are loaded
(:func:`release_compiler`).

The heap: glibc's ``malloc_trim``.

glibc serves allocations of 128 KB and more with ``mmap`` and unmaps them when freed, but raises
that threshold to the size of each such block freed (up to 32 MB): after the first prompt, a
prompt's activations (MBs each) come from the heap, and glibc keeps the heap's freed space. A 1.1B
model's process grew by ~35 MB over five 256-token generations that way (peak resident 918 MB
instead of 883; file 661 MB; issue 16 asks for memory at file size). Fixing the threshold
(``mallopt(M_MMAP_THRESHOLD)``) stopped the growth but made every large array fresh pages to
fault in: SmolLM2's prompts ran 25 % slower. :func:`trim` instead returns the free heap once per
generation (:func:`~mlxquant.runtime.generate.generate_tokens` calls it at its end; well under a
millisecond). Linux with glibc only; elsewhere it does nothing.

The compiler: Numba's kernels run as machine code, but loading one (from Numba's disk cache, or
compiling it) runs LLVM, whose library (``libllvmlite.so``, 179 MB) then stays mapped with the
pages that work touched: 68 MB resident in a 1.1B model's generation, 10 % of its 661 MB file,
all of it clean pages of the file (code and constants). :func:`release_compiler` drops them from
this process's page tables (``madvise(MADV_DONTNEED)``); they stay in the page cache, and the
next compilation faults back what it needs. Only mappings of the library that hold no page of
their own are dropped (a private file mapping's written pages, e.g. the relocated data, would be
lost; ``/proc/self/smaps`` tells them apart), so nothing the library holds changes.
:func:`release_compiler_if_used` does it only when the compiler ran since the last release (a
listener on Numba's compiler lock counts), cheap enough to call after every block of a forward
pass: the runtime does, and a generation loads its decode step before the prompt
(:meth:`~mlxquant.runtime.numpy_model.NumpyModel.prepare_decode`), so the compiler's pages are
gone before the weights' pages come in and the peak is the weights' (issue 16: resident memory at
file size). Linux only; elsewhere both do nothing.
"""

from __future__ import annotations

import ctypes
import sys
import threading

_trim: list = []  # [malloc_trim or None], looked up once
COMPILER_LIBRARY = "libllvmlite"  # the file name of the mappings release_compiler drops
MADV_DONTNEED = 4
_LOCK = threading.Lock()
_runs = [0, 0]  # [compiler runs seen (ends of Numba's compiler lock), runs at the last release]


def trim() -> bool:
    """``malloc_trim(0)``: True when memory was returned to the OS."""
    if not _trim:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None).malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
                fn = None
        _trim.append(fn)
    return bool(_trim[0] is not None and _trim[0](0))


def _count_compiler_runs() -> None:
    """Count the ends of Numba's global compiler lock (taken to compile a function or load one
    from the disk cache): :func:`release_compiler_if_used` compares the count."""
    try:
        from numba.core import event
    except ImportError:  # no Numba: nothing compiles
        return

    class Counter(event.Listener):
        def on_start(self, ev: object) -> None:
            pass

        def on_end(self, ev: object) -> None:
            _runs[0] += 1

    event.register("numba:compiler_lock", Counter())


def compiler_mappings() -> list[tuple[int, int, bool]]:
    """``(start, end, clean)`` of each read-only mapping of :data:`COMPILER_LIBRARY` in this
    process (``clean``: no page of it is the process's own copy), from ``/proc/self/smaps``;
    empty where there is none (or no ``/proc``)."""
    out: list[tuple[int, int, bool]] = []
    try:
        with open("/proc/self/smaps") as f:
            text = f.read()
    except OSError:
        return out
    cur: list | None = None
    for line in text.splitlines():
        head = line.split(None, 6)
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
            cur = None
            if len(head) >= 6 and COMPILER_LIBRARY in head[5] and head[1] in ("r-xp", "r--p"):
                a, b = (int(x, 16) for x in head[0].split("-"))
                cur = [a, b, True]
                out.append(cur)  # type: ignore[arg-type]
        elif cur is not None and head[0] in ("Anonymous:", "Private_Dirty:", "Swap:") and head[1] != "0":
            cur[2] = False
    return [tuple(m) for m in out]  # type: ignore[misc]


def release_compiler() -> int:
    """Drop this process's resident pages of the compiler library's clean read-only mappings
    (see the module docstring) and :func:`trim` the heap; returns the bytes of address range
    released (0 off Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    done = 0
    with _LOCK:
        _runs[1] = _runs[0]
        for a, b, clean in compiler_mappings():
            if clean and madvise(a, b - a, MADV_DONTNEED) == 0:
                done += b - a
    trim()  # and what the compiler freed on the heap
    return done


def release_compiler_if_used() -> int:
    """:func:`release_compiler` if Numba's compiler ran since the last release (one comparison
    otherwise); returns the bytes released."""
    return release_compiler() if _runs[0] != _runs[1] else 0


_count_compiler_runs()
