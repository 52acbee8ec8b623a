"""A readers-writer lock for the datastore: reads share it, edits take it alone.

Reads (get, get-config, filtered gets) never wait for other reads, so one expensive
filter cannot stall another session's get-config; a reader waits only while an edit
is being applied. Readers are preferred: a waiting writer does not hold back new
readers (reads are bounded by the filter limits, so writers cannot starve for long,
and a writer queued behind a long read must not make every other read queue too).
Not reentrant by itself: :class:`~escnc.datastore.store.Datastore` tracks nesting per
thread and takes this lock only at the outermost level.
"""

from __future__ import annotations

import threading


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    @property
    def readers(self) -> int:
        with self._cond:
            return self._readers
