"""Host memory hygiene: give the memory that XLA's compiler freed back to the operating system.

Compiling a train step takes hundreds of MiB on the host (on CPU, more than the step's own
buffers). glibc keeps freed blocks in per-thread arenas, so without a trim the process keeps
that memory, and the step's buffers are allocated on top of it. `release_freed_memory()` calls
glibc's `malloc_trim(0)` after compilation; elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Returns freed heap memory to the OS (glibc `malloc_trim`); True if it could."""
    libc = _libc()
    if libc is None:
        logging.debug("malloc_trim is not available; host memory is not trimmed")
        return False
    libc.malloc_trim(0)
    return True
