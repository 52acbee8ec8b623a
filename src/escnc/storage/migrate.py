"""Schema creation and migration: one version row per component.

A component (``events``, later ``datastore``, ``users``...) lists its migrations;
migration N takes the schema from version N-1 to N. :func:`migrate` runs the missing
ones in one transaction under a lock (two nodes starting at once migrate once), and
refuses a database that a newer escnc already migrated (:class:`SchemaTooNew`): in a
rolling upgrade the old node stops instead of writing to a schema it does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from escnc.storage.base import Connection, SchemaTooNew, StorageError

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS escnc_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""
# any constant: the key of the PostgreSQL advisory lock that serialises migrations
_MIGRATION_LOCK = 0x6573636E63


@dataclass(frozen=True)
class Migration:
    """Statements (dialect-neutral SQL, see Dialect.sql) and/or a function to run."""

    version: int
    statements: Sequence[str] = ()
    run: Callable[[Connection], None] | None = None


def schema_version(conn: Connection, component: str) -> int:
    conn.execute(_VERSION_TABLE)
    row = conn.execute("SELECT version FROM escnc_schema WHERE component = ?",
                       (component,)).fetchone()
    return int(row[0]) if row else 0


def migrate(conn: Connection, component: str, migrations: Sequence[Migration]) -> int:
    """Bring ``component`` up to the last of ``migrations``; returns the version."""
    target = len(migrations)
    if [m.version for m in migrations] != list(range(1, target + 1)):
        raise ValueError("migrations must be numbered 1..N in order")
    with conn.transaction():
        if conn.dialect.name == "postgresql":
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        conn.execute(_VERSION_TABLE)
        row = conn.execute("SELECT version FROM escnc_schema WHERE component = ?",
                           (component,)).fetchone()
        current = int(row[0]) if row else 0
        if current > target:
            raise SchemaTooNew(
                f"{component} schema is at version {current}; this escnc knows {target}"
            )
        for migration in migrations[current:]:
            for statement in migration.statements:
                conn.execute(statement)
            if migration.run is not None:
                migration.run(conn)
        if current != target:
            if row is None:
                conn.execute("INSERT INTO escnc_schema(component, version) VALUES(?, ?)",
                             (component, target))
            else:
                conn.execute("UPDATE escnc_schema SET version = ? WHERE component = ?",
                             (target, component))
    return target


__all__ = ["Migration", "StorageError", "migrate", "schema_version"]
