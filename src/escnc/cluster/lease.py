"""The lease row: who leads, with which fencing token, and a version bumped on every
renewal (what standbys watch). Plain SQL on the storage interface, so it runs on
PostgreSQL (several nodes) and on SQLite (one machine; tests, a single node).

Every change is a compare-and-set in one UPDATE: the token only grows (acquire adds
one), so a write checked against token T cannot come from an older leader.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from escnc.storage import Connection, Migration, migrate


@dataclass(frozen=True)
class LeaseRow:
    holder: str | None  # node id of the leader; None: free (released or never held)
    address: str | None  # where clients reach the leader
    token: int
    version: int
    renewed_ms: int  # wall time of the last renewal (informational: lease age)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Member:
    node: str
    address: str
    role: str  # "leader" | "standby"
    seen_ms: int  # wall time of its last election round


MIGRATIONS = (
    Migration(1, statements=(
        "CREATE TABLE cluster_lease (name TEXT PRIMARY KEY, holder TEXT, address TEXT,"
        " token {bigint} NOT NULL, version {bigint} NOT NULL, renewed_ms {bigint} NOT NULL)",
    )),
    Migration(2, statements=(
        "CREATE TABLE cluster_members (name TEXT NOT NULL, node TEXT NOT NULL,"
        " address TEXT NOT NULL, role TEXT NOT NULL, seen_ms {bigint} NOT NULL,"
        " PRIMARY KEY (name, node))",
    )),
)


class LeaseStore:
    """SQL for one named lease (``name``: one per cluster sharing the database)."""

    def __init__(self, name: str = "escnc") -> None:
        self.name = name

    def setup(self, conn: Connection) -> None:
        migrate(conn, "cluster", MIGRATIONS)
        conn.execute(
            "INSERT INTO cluster_lease(name, holder, address, token, version, renewed_ms)"
            " VALUES(?, NULL, NULL, 0, 0, 0) ON CONFLICT (name) DO NOTHING", (self.name,))

    def read(self, conn: Connection) -> LeaseRow | None:
        row = conn.execute(
            "SELECT holder, address, token, version, renewed_ms FROM cluster_lease"
            " WHERE name = ?", (self.name,)).fetchone()
        if row is None:
            return None
        return LeaseRow(row[0], row[1], int(row[2]), int(row[3]), int(row[4]))

    def acquire(self, conn: Connection, node: str, address: str, seen: LeaseRow) -> int | None:
        """Take the lease if it is still exactly as ``seen``; the new token or None."""
        row = conn.execute(
            "UPDATE cluster_lease SET holder = ?, address = ?, token = token + 1,"
            " version = version + 1, renewed_ms = ? WHERE name = ? AND token = ?"
            " AND version = ? RETURNING token",
            (node, address, wall_ms(), self.name, seen.token, seen.version)).fetchone()
        return int(row[0]) if row else None

    def renew(self, conn: Connection, node: str, token: int) -> bool:
        row = conn.execute(
            "UPDATE cluster_lease SET version = version + 1, renewed_ms = ?"
            " WHERE name = ? AND holder = ? AND token = ? RETURNING version",
            (wall_ms(), self.name, node, token)).fetchone()
        return row is not None

    def release(self, conn: Connection, node: str, token: int) -> bool:
        cur = conn.execute(
            "UPDATE cluster_lease SET holder = NULL, address = NULL, version = version + 1"
            " WHERE name = ? AND holder = ? AND token = ?", (self.name, node, token))
        return cur.rowcount == 1

    def current_token(self, conn: Connection) -> tuple[int, str | None]:
        """(token, holder) read inside the caller's write transaction; on PostgreSQL the
        row is share-locked to the commit, so no takeover can commit in between."""
        row = conn.execute(
            "SELECT token, holder FROM cluster_lease WHERE name = ?{for_share}",
            (self.name,)).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def heartbeat(self, conn: Connection, node: str, address: str, role: str) -> None:
        """Record that ``node`` is alive (opdata lists the members; informational)."""
        conn.execute(
            "INSERT INTO cluster_members(name, node, address, role, seen_ms)"
            " VALUES(?, ?, ?, ?, ?) ON CONFLICT (name, node) DO UPDATE SET"
            " address = excluded.address, role = excluded.role, seen_ms = excluded.seen_ms",
            (self.name, node, address, role, wall_ms()))

    def leave(self, conn: Connection, node: str) -> None:
        conn.execute("DELETE FROM cluster_members WHERE name = ? AND node = ?",
                     (self.name, node))

    def members(self, conn: Connection) -> list[Member]:
        rows = conn.execute(
            "SELECT node, address, role, seen_ms FROM cluster_members WHERE name = ?"
            " ORDER BY node", (self.name,)).fetchall()
        return [Member(r[0], r[1], r[2], int(r[3])) for r in rows]
