"""SQLite backend: one file, WAL mode, autocommit outside explicit transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from escnc.storage.base import (
    SQLITE,
    Connection,
    StorageClosed,
    StorageError,
    StorageUnavailable,
)


def _translate(exc: Exception) -> StorageError:
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
        return StorageClosed(str(exc))
    if isinstance(exc, sqlite3.OperationalError) and (
        "unable to open" in str(exc) or "disk I/O" in str(exc)
    ):
        return StorageUnavailable(str(exc))
    return StorageError(str(exc))


class SqliteConnection(Connection):
    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE: take the write lock now, so two writers (threads or processes)
        # serialise here instead of failing at commit
        self.raw.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.raw.execute("COMMIT")
        except BaseException:
            if self.raw.in_transaction:  # also when COMMIT itself failed (busy, I/O)
                self.raw.execute("ROLLBACK")
            raise


class SqliteStorage:
    dialect = SQLITE

    def __init__(self, path: Path, *, synchronous: str = "NORMAL",
                 busy_timeout_ms: int = 5000) -> None:
        """``synchronous``: NORMAL in WAL mode keeps committed data over a process crash
        (an OS crash may lose the last transactions); FULL also over an OS crash."""
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"bad synchronous mode {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = int(busy_timeout_ms)

    def connect(self) -> Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # the busy timeout from the start: switching a new file to WAL takes a lock
            # that another connection opening it at the same moment may hold
            raw = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                  timeout=self.busy_timeout_ms / 1000)
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute(f"PRAGMA synchronous={self.synchronous}")
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"cannot open {self.path}: {exc}") from exc
        return SqliteConnection(raw, SQLITE, _translate)

    def describe(self) -> str:
        return f"sqlite:{self.path}"
