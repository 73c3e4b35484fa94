"""handlers/startup.py's cap on malloc arenas: set through glibc's mallopt, unless the environment says otherwise."""

from __future__ import annotations

import platform

import pytest

from sunblend.handlers import startup


def test_an_explicit_malloc_arena_max_is_left_to_the_c_library():
    assert startup.limit_malloc_arenas({"MALLOC_ARENA_MAX": "4"}) is False


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt is Linux-only"
)
def test_glibc_accepts_the_cap():
    assert startup.limit_malloc_arenas({}) is True
