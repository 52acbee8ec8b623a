"""Handing freed heap back to the operating system after large commits.

glibc keeps the memory of freed small objects in its arenas, so after loading and
removing 10,000 entries the process stayed at its peak size. ``malloc_trim(0)``
returns the free pages (a few milliseconds, only after commits of many units).
Most of a large edit is freed only after its commit returns (the parsed request,
the reply, the validation instance), so the trim runs again shortly after.

glibc also gives every thread that allocates under contention an arena of its
own (up to 8 per core); each keeps its freed pages, so a server of many session
threads held tens of MiB more after a large edit. :func:`limit_arenas` caps them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2
TRIM_AGAIN_AFTER = 0.2  # seconds: the request and reply of the large edit are gone by then


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.malloc_trim  # noqa: B018 (not glibc: no malloc_trim)
        return lib
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
_later_lock = threading.Lock()
_later: threading.Timer | None = None


def release_memory() -> None:
    """Trim now, and once more shortly after (coalesced)."""
    global _later
    _trim()
    with _later_lock:
        if _later is None:
            _later = threading.Timer(TRIM_AGAIN_AFTER, _trim_later)
            _later.daemon = True
            _later.start()


def _trim_later() -> None:
    global _later
    with _later_lock:
        _later = None
    _trim()


def _trim() -> None:
    if _LIBC is not None:
        try:
            _LIBC.malloc_trim(0)
        except Exception:  # never let housekeeping fail a commit
            log.debug("malloc_trim failed", exc_info=True)


def limit_arenas(arenas: int = ARENAS) -> None:
    """Cap glibc's malloc arenas (process wide; threads that start later share them)."""
    if _LIBC is not None:
        try:
            _LIBC.mallopt(_M_ARENA_MAX, arenas)
        except Exception:
            log.debug("mallopt failed", exc_info=True)
