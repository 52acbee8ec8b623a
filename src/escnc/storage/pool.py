"""A pool of connections for readers that come and go (sessions, consumers).

A connection that failed with :class:`StorageUnavailable` is not returned to the pool:
the next user opens a fresh one (PostgreSQL restarted, or failed over under Patroni).
A connection that sat idle for more than ``ping_after`` seconds may have died
meanwhile without anyone noticing (the server restarted, the network cut): on a
backend with a network (PostgreSQL) it answers a ``SELECT 1`` before it is handed
out, or is replaced by a fresh one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from escnc.storage.base import Connection, Storage, StorageClosed, StorageUnavailable


class ConnectionPool:
    def __init__(self, storage: Storage, max_idle: int = 8, ping_after: float = 1.0) -> None:
        self.storage = storage
        self.max_idle = max(0, max_idle)
        # a file on this machine does not die idle; a server connection may
        self.ping_after = ping_after if storage.dialect.name != "sqlite" else float("inf")
        self._idle: list[tuple[Connection, float]] = []  # (connection, idle since)
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._lock:
            if self._closed:
                raise StorageClosed("connection pool is closed")
            conn, since = self._idle.pop() if self._idle else (None, 0.0)
        if conn is not None and time.monotonic() - since > self.ping_after:
            conn = alive(conn)
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
                        self._idle.append((conn, time.monotonic()))
                        keep = True
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _since in idle:
            conn.close()



def alive(conn: Connection) -> Connection | None:
    """``conn`` if it still answers, else None (closed)."""
    try:
        conn.execute("SELECT 1")
    except StorageUnavailable:
        conn.close()
        return None
    return conn
