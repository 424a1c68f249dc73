"""Give the heap's free memory back to the OS after a generation: glibc's ``malloc_trim``.

glibc serves allocations of 128 KB and more with ``mmap`` and unmaps them when freed, but raises
that threshold to the size of each such block freed (up to 32 MB): after the first prompt, a
prompt's activations (MBs each) come from the heap, and glibc keeps the heap's freed space. A 1.1B
model's process grew by ~35 MB over five 256-token generations that way (peak resident 918 MB
instead of 883; file 661 MB; issue 16 asks for memory at file size). Fixing the threshold
(``mallopt(M_MMAP_THRESHOLD)``) stopped the growth but made every large array fresh pages to
fault in: SmolLM2's prompts ran 25 % slower. :func:`trim` instead returns the free heap once per
generation (:func:`~mlxquant.runtime.generate.generate_tokens` calls it at its end; well under a
millisecond). Linux with glibc only; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

_trim: list = []  # [malloc_trim or None], looked up once


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
