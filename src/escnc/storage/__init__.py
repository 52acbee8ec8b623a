"""Durable storage behind one small interface (issue 18).

:class:`~escnc.storage.base.Storage` opens :class:`~escnc.storage.base.Connection`\\ s
that speak one SQL (``?`` placeholders, ``{bigint}``/``{blob}`` type names) to either
backend: SQLite files (the embedded default) or PostgreSQL (psycopg 3; production and
HA, several escnc nodes on one database). Schemas are created and migrated by
:func:`~escnc.storage.migrate.migrate` with a version row per component.

This package is the bottom layer: it imports nothing else from escnc.
"""

from escnc.storage.base import (
    Connection,
    Dialect,
    SchemaTooNew,
    Storage,
    StorageClosed,
    StorageError,
    StorageUnavailable,
)
from escnc.storage.migrate import Migration, migrate, schema_version
from escnc.storage.open import open_storage
from escnc.storage.pool import ConnectionPool

__all__ = [
    "Connection",
    "ConnectionPool",
    "Dialect",
    "Migration",
    "SchemaTooNew",
    "Storage",
    "StorageClosed",
    "StorageError",
    "StorageUnavailable",
    "migrate",
    "open_storage",
    "schema_version",
]
