"""The storage protocol: a backend opens connections; a connection runs one SQL.

SQL is written once, SQLite-style: ``?`` placeholders and ``{bigint}``, ``{blob}`` for
the column types that differ. :meth:`Dialect.sql` turns it into what the driver takes
(for PostgreSQL: ``%s`` placeholders, ``BIGINT``/``BYTEA``); the translation is cached.
Outside :meth:`Connection.transaction` every statement commits on its own (autocommit
on both backends), so a reader never holds a snapshot open by accident.

Driver errors leave this layer as :class:`StorageError` subclasses: callers (event log,
cluster lease) do not import sqlite3 or psycopg.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol


class StorageError(Exception):
    """A storage operation failed (constraint, SQL, driver)."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or the connection was lost."""


class StorageClosed(StorageError):
    """The connection or pool was closed by its owner."""


class SchemaTooNew(StorageError):
    """The database was migrated by a newer escnc than this one."""


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL, and nothing else."""

    name: str  # "sqlite" | "postgresql"
    bigint: str
    blob: str
    # appended to a SELECT inside a write transaction to lock the rows read against
    # concurrent writers (PostgreSQL); SQLite write transactions are serial anyway
    for_share: str
    pyformat: bool  # driver wants %s placeholders (and %% for a literal %)

    def sql(self, text: str) -> str:
        key = (self.name, text)
        found = _CACHE.get(key)
        if found is None:
            if len(_CACHE) > 4096:  # callers build SQL from a few templates; bound it anyway
                _CACHE.clear()
            found = _CACHE[key] = _translate(self, text)
        return found


_CACHE: dict[tuple[str, str], str] = {}


def _translate(dialect: Dialect, text: str) -> str:
    text = text.replace("{bigint}", dialect.bigint).replace("{blob}", dialect.blob)
    text = text.replace("{for_share}", dialect.for_share)
    if not dialect.pyformat:
        return text
    out: list[str] = []
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


SQLITE = Dialect("sqlite", bigint="INTEGER", blob="BLOB", for_share="", pyformat=False)
POSTGRESQL = Dialect("postgresql", bigint="BIGINT", blob="BYTEA", for_share=" FOR SHARE",
                     pyformat=True)


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(abc.ABC):
    """One database connection (not thread safe: one user at a time, e.g. via a pool)."""

    def __init__(self, raw: Any, dialect: Dialect,
                 translate: Callable[[Exception], StorageError]) -> None:
        self.raw = raw  # the driver's connection, for backend-specific extras
        self.dialect = dialect
        self._translate = translate  # driver exception -> StorageError
        self._in_tx = False
        self.closed = False

    def execute(self, sql: str, args: Sequence[object] = ()) -> Cursor:
        if self.closed:
            raise StorageClosed("connection is closed")
        try:
            return self._execute(self.dialect.sql(sql), tuple(args))
        except Exception as exc:
            if not _is_driver_error(exc):
                raise  # a bug of ours (bad argument type...), not a storage failure
            raise self._translate(exc) from exc

    def _execute(self, sql: str, args: tuple[object, ...]) -> Cursor:
        return self.raw.execute(sql, args)  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """``sql`` once per row of arguments (one round trip per batch on psycopg)."""
        if self.closed:
            raise StorageClosed("connection is closed")
        if not rows:
            return
        try:
            self.raw.cursor().executemany(self.dialect.sql(sql), [tuple(r) for r in rows])
        except Exception as exc:
            if not _is_driver_error(exc):
                raise
            raise self._translate(exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: commits when the block ends, rolls back on an error."""
        if self._in_tx:
            raise StorageError("nested transactions are not supported")
        self._in_tx = True
        try:
            with self._transaction():
                yield self
        except Exception as exc:
            if isinstance(exc, StorageError) or not _is_driver_error(exc):
                raise  # ours, or the caller's own exception (after the rollback)
            raise self._translate(exc) from exc
        finally:
            self._in_tx = False

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """The backend's BEGIN ... COMMIT (ROLLBACK on an error) around the block."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.raw.close()
        except Exception:  # closing a broken connection must not fail the caller
            pass


def _is_driver_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("sqlite3", "psycopg"))


class Storage(Protocol):
    """A backend: where the data lives and how to reach it."""

    dialect: Dialect

    def connect(self) -> Connection:
        """A new connection (raises StorageUnavailable when the database cannot be reached)."""
        ...

    def describe(self) -> str:
        """Where the data is, for logs and ``escnc status`` (no password)."""
        ...
