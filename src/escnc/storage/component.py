"""One component's connections: a serialised, fenced writer and a pool of readers.

The stores that moved onto the storage interface (engine state, day-2 records,
reservations, users, callbacks) all need the same: migrate their schema once, write
in transactions that the cluster fence checks first (so a replaced leader's write
cannot commit), read on pooled connections, and reconnect after the database went
away. :class:`Component` is that, and nothing about any store's tables.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from escnc.storage.base import Connection, Storage, StorageClosed, StorageUnavailable
from escnc.storage.migrate import Migration, migrate


class WriteFence(Protocol):
    """What a write transaction calls first (escnc.cluster.fence.Fence has this shape):
    raises when this node may not write any more; the check runs inside the
    transaction, so on PostgreSQL it holds the lease row to the commit."""

    def check_in(self, conn: Connection) -> int: ...


class NoFence:
    """No cluster: every write may commit (the single-node server)."""

    def check_in(self, conn: Connection) -> int:
        return 0


class Component:
    """``name``'s schema on ``storage`` (migrated here) and its connections. Thread safe."""

    def __init__(self, storage: Storage, name: str, migrations: Sequence[Migration], *,
                 fence: WriteFence | None = None, max_idle: int = 4) -> None:
        from escnc.storage.pool import ConnectionPool

        self.storage = storage
        self.name = name
        # settable: the wiring hands in the elector's fence once there is one
        self.fence: WriteFence = fence if fence is not None else NoFence()
        self._write_lock = threading.RLock()
        self._writer: Connection | None = storage.connect()
        # SQLite: opening a local file is cheap and an idle connection holds file
        # descriptors, so one stays idle (more readers at once open and close their
        # own); PostgreSQL: connecting costs round trips, keep up to max_idle
        idle = max_idle if storage.dialect.name != "sqlite" else 1
        self._pool = ConnectionPool(storage, max_idle=idle)
        try:
            migrate(self._writer, name, migrations)
            with self._pool.connection():  # the idle one, now: a steady count from the start
                pass
        except BaseException:  # e.g. SchemaTooNew: the caller gets no object to close
            self._pool.close()
            self._writer.close()
            raise
        self._closed = False
        self._writer_used = time.monotonic()

    @property
    def dialect(self) -> str:
        return self.storage.dialect.name

    def _writer_conn(self) -> Connection:
        from escnc.storage.pool import alive

        if self._closed:
            raise StorageClosed(f"{self.name} store is closed")
        writer = self._writer
        if writer is not None and not writer.closed and self._pool.ping_after < float("inf") \
                and time.monotonic() - self._writer_used > self._pool.ping_after:
            writer = alive(writer)  # idle a while: it may have died
        if writer is None or writer.closed:
            writer = self.storage.connect()  # the database came back
        self._writer = writer
        self._writer_used = time.monotonic()
        return writer

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, fenced first thing; one writer at a time (writes commit
        in the order they were made, which the stores' memory mirrors rely on)."""
        with self._write_lock:
            conn = self._writer_conn()
            try:
                with conn.transaction():
                    self.fence.check_in(conn)
                    yield conn
            except StorageUnavailable:
                conn.close()  # reconnect on the next write
                raise

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer's lock (re-entrant) across several steps, e.g. a
        read-modify-write of a memory mirror followed by :meth:`write`."""
        with self._write_lock:
            yield

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A pooled connection for reads (autocommit: every statement sees the latest
        committed data)."""
        if self._closed:
            raise StorageClosed(f"{self.name} store is closed")
        with self._pool.connection() as conn:
            yield conn

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._pool.close()
            if self._writer is not None:
                self._writer.close()


def sqlite_tables(conn: Connection) -> set[str]:
    """Tables in a SQLite file (for migrations adopting a file written before the
    storage interface); empty on other backends."""
    if conn.dialect.name != "sqlite":
        return set()
    return {str(r[0]) for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}


def column_types(conn: Connection) -> dict[str, str]:
    """Type names that Dialect does not cover: ``{double}`` (8-byte float; PostgreSQL's
    REAL is 4 bytes) and ``{serial}`` (an integer key the database assigns, in order)."""
    if conn.dialect.name == "postgresql":
        return {"double": "DOUBLE PRECISION",
                "serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"}
    return {"double": "REAL", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"}


def ddl(conn: Connection, text: str) -> None:
    """Run a CREATE statement with ``{double}``/``{serial}`` filled in for ``conn``."""
    types = column_types(conn)
    conn.execute(text.replace("{double}", types["double"]).replace("{serial}", types["serial"]))


def component_storage(store: str, path: str | os.PathLike[str] | None,
                      database: str | None, storage: Storage | None, *,
                      synchronous: str = "FULL", private: bool = False) -> Storage:
    """Where a store lives: ``storage`` as given, else ``database`` (a postgresql://
    URL, the cluster's) or the SQLite file ``path``. ``private``: the SQLite file is
    created 0600 before SQLite opens it (SQLite gives its -wal and -shm the mode)."""
    from escnc.storage.open import open_storage
    from escnc.storage.sqlite import SqliteStorage

    if storage is None:
        if path is None:
            raise ValueError(f"{store} needs a path or a storage")
        storage = open_storage(database, Path(path), synchronous=synchronous)
    if private and isinstance(storage, SqliteStorage):
        storage.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(storage.path, os.O_CREAT | os.O_WRONLY, 0o600))
    return storage


class FencedStore:
    """A store on one :class:`Component`; its fence is settable, as the wiring hands
    in the node's once there is one (app.fence_stores)."""

    _db: Component

    @property
    def fence(self) -> WriteFence:
        return self._db.fence

    @fence.setter
    def fence(self, fence: WriteFence) -> None:
        self._db.fence = fence
