"""Give large freed arrays back to the OS at once: glibc's fixed mmap threshold.

glibc serves allocations of 128 KB and more with ``mmap`` and unmaps them when freed, but raises
that threshold to the size of each such block freed (up to 32 MB): after the first prompt, a
prompt's activations (MBs each) come from the heap, whose freed space glibc keeps. A 1.1B model's
process grew by ~35 MB over five 256-token generations that way (peak resident 918 MB instead of
883, file 661 MB; issue 16 asks for memory at file size). Fixing the threshold
(``mallopt(M_MMAP_THRESHOLD, 256 KB)``, which also stops the raising) returns every large array's
pages when it is freed; the cost is fresh page faults per large array (~1 % of a prompt here).

:func:`fix_mmap_threshold` does it once per process when the NumPy runtime loads a model, on Linux
with glibc only, and not when the environment sets ``MALLOC_MMAP_THRESHOLD_`` (glibc's own
variable) or ``MLXQUANT_MALLOC=0``.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3
THRESHOLD = 256 << 10
_done = [False]


def fix_mmap_threshold() -> bool:
    """Set glibc's mmap threshold to 256 KB (once); True when it was set now or before."""
    if _done[0]:
        return True
    if (not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ
            or os.environ.get("MLXQUANT_MALLOC", "1") == "0"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done[0] = mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
    return _done[0]
