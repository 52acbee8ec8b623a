"""A pool of connections for readers that come and go (sessions, consumers).

A connection that failed with :class:`StorageUnavailable` is not returned to the pool:
the next user opens a fresh one (PostgreSQL restarted, or failed over under Patroni).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from escnc.storage.base import Connection, Storage, StorageClosed, StorageUnavailable


class ConnectionPool:
    def __init__(self, storage: Storage, max_idle: int = 8) -> None:
        self.storage = storage
        self.max_idle = max(0, max_idle)
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._lock:
            if self._closed:
                raise StorageClosed("connection pool is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self.storage.connect()
        broken = False
        try:
            yield conn
        except StorageUnavailable:
            broken = True
            raise
        finally:
            keep = False
            if not broken and not conn.closed:
                with self._lock:
                    if not self._closed and len(self._idle) < self.max_idle:
                        self._idle.append(conn)
                        keep = True
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
