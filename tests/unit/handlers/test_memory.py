"""handlers/memory.py's malloc settings: set through glibc's mallopt, unless the environment says otherwise."""

from __future__ import annotations

import platform

import pytest

from sunblend.handlers import memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_explicit_malloc_variables_are_left_to_the_c_library():
    assert memory.tune_malloc({"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536"}) == {
        "arenas": False,
        "mmap_threshold": False,
    }


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt is Linux-only")
def test_glibc_accepts_the_settings():
    assert memory.tune_malloc({}) == {"arenas": True, "mmap_threshold": True}


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim is Linux-only")
def test_freed_heap_pages_are_given_back():
    held = [bytearray(4096) for _ in range(20_000)]  # 80 MB of small buffers from the heap, not mapped
    del held
    assert memory.give_back() is True
