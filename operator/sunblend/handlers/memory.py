"""How the operator's process uses the C library's malloc: fewer arenas, big buffers mapped, free pages given back.

A burst of pools leaves the heap full of freed memory: watch events, HTTP answers and JSON
bodies come and go, and glibc keeps what they freed. Three settings keep the resident memory
close to what is in use (glibc only; another C library is left as it is, and an explicit
``MALLOC_*`` variable in the environment wins, as glibc reads it itself):

- at most ``MALLOC_ARENAS`` arenas: glibc gives threads that allocate at once arenas of their own,
  up to eight per core, and memory freed in one arena is not reused by another;
- a fixed mmap threshold (``MMAP_THRESHOLD_BYTES``): glibc otherwise raises it each time a mapped
  buffer is freed, after which big buffers come from the heap and stay there when freed;
- ``give_back``: ``malloc_trim(0)`` returns the heap's free pages to the system; the fast loop calls
  it after each pass.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping
from typing import Final

# glibc's mallopt(3) parameters (malloc.h), and our values.
M_ARENA_MAX: Final = -8
M_MMAP_THRESHOLD: Final = -3
MALLOC_ARENAS: Final = 2
MMAP_THRESHOLD_BYTES: Final = 256 * 1024


def _libc(name: str) -> Callable[..., int] | None:
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    return function


def tune_malloc(environ: Mapping[str, str] = os.environ) -> dict[str, bool]:
    """Cap the arenas and fix the mmap threshold, before the operator's threads start; what was set."""
    mallopt = _libc("mallopt")
    if mallopt is None:
        return {"arenas": False, "mmap_threshold": False}
    wanted = {
        "arenas": ("MALLOC_ARENA_MAX", M_ARENA_MAX, MALLOC_ARENAS),
        "mmap_threshold": ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
    }
    return {
        what: variable not in environ and bool(mallopt(ctypes.c_int(parameter), ctypes.c_int(value)))
        for what, (variable, parameter, value) in wanted.items()
    }


def give_back() -> bool:
    """Return the free pages of malloc's heap to the system; whether any were."""
    trim = _libc("malloc_trim")
    return trim is not None and bool(trim(ctypes.c_size_t(0)))
