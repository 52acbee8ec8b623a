"""Handing freed heap back to the operating system after large commits.

glibc keeps the memory of freed small objects in its arenas, so after loading and
removing 10,000 entries the process stayed at its peak size. ``malloc_trim(0)``
returns the free pages (a few milliseconds, only after commits of many units).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)


def _load_trim():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _load_trim()


def release_memory() -> None:
    if _TRIM is not None:
        try:
            _TRIM(0)
        except Exception:  # never let housekeeping fail a commit
            log.debug("malloc_trim failed", exc_info=True)
