"""Heap housekeeping after large commits (datastore/memory.py), on the real libc."""

from __future__ import annotations

import time

import pytest

from escnc.datastore import memory


def test_release_memory_trims_again_once_shortly_after() -> None:
    if memory._LIBC is None:
        pytest.skip("not glibc")
    memory.release_memory()
    first = memory._later
    assert first is not None and first.daemon
    memory.release_memory()  # a second large commit meanwhile: still one timer
    assert memory._later is first
    deadline = time.monotonic() + 10
    while memory._later is not None and time.monotonic() < deadline:
        first.join(0.05)
    assert memory._later is None and not first.is_alive()


def test_limit_arenas_is_harmless_to_call_again() -> None:
    memory.limit_arenas()
    memory.limit_arenas(memory.ARENAS)
