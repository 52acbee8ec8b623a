"""Pick the backend from a setting: a ``postgresql://`` URL or a SQLite file path."""

from __future__ import annotations

from pathlib import Path

from escnc.storage.base import Storage
from escnc.storage.postgresql import PostgresStorage
from escnc.storage.sqlite import SqliteStorage


def open_storage(database: str | None, sqlite_path: Path, *,
                 synchronous: str = "NORMAL") -> Storage:
    """``database`` (``escnc serve --database``) when it is a PostgreSQL URL, else the
    SQLite file ``sqlite_path`` (the embedded default)."""
    if database and database.startswith(("postgresql://", "postgres://")):
        return PostgresStorage(database)
    if database:
        raise ValueError("--database takes a postgresql:// URL (SQLite is the default)")
    return SqliteStorage(sqlite_path, synchronous=synchronous)
