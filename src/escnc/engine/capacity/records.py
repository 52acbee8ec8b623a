"""Reservations and capacity subscriptions, and their store (``reservations.sqlite3``
in the state directory or the cluster's PostgreSQL database, one JSON row each).

A reservation's status follows the seed: ``initialized`` until startTime, then
``active``, then ``expired`` at stopTime; ``terminated`` when terminated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from escnc.engine.capacity.model import INF, Amount
from escnc.storage import Connection, Migration, Storage
from escnc.storage.component import (
    Component,
    FencedStore,
    WriteFence,
    component_storage,
    sqlite_tables,
)

INITIALIZED, ACTIVE, EXPIRED, TERMINATED = "initialized", "active", "expired", "terminated"
CONDITIONS = ("lt", "le", "gt", "ge", "eq")
FIGURES = ("available", "reserved", "total", "allocated")


@dataclass(frozen=True)
class Reservation:
    id: str
    kind: str  # compute | network | storage
    zone: str  # a zone name (a host is a zone of its own); "" for network addresses
    start: float
    stop: float | None
    amount: Amount
    containers: tuple[dict[str, Any], ...] = ()  # virtualizationContainerReservation as given
    public_ips: tuple[str, ...] = ()  # addresses held by a network reservation
    terminated: bool = False
    created: float = 0.0
    reported: str = ""  # last status announced by a reservation event

    def status(self, now: float) -> str:
        if self.terminated:
            return TERMINATED
        if self.stop is not None and now >= self.stop:
            return EXPIRED
        return INITIALIZED if now < self.start else ACTIVE

    def holds(self, start: float, stop: float) -> bool:
        """Holds capacity at some time in [start, stop)."""
        if self.terminated:
            return False
        end = INF if self.stop is None else self.stop
        return self.start < stop and end > start

    def to_json(self) -> str:
        data = asdict(self)
        data["amount"] = asdict(self.amount)
        return json.dumps(data)

    @staticmethod
    def from_json(text: str) -> Reservation:
        data = json.loads(text)
        data.setdefault("kind", "compute")  # rows of the compute-only version
        data["amount"] = Amount(**data["amount"])
        data["containers"] = tuple(data.get("containers") or ())
        data["public_ips"] = tuple(data.get("public_ips") or ())
        return Reservation(**data)


@dataclass(frozen=True)
class Threshold:
    capacity_info: str  # available | reserved | total | allocated
    condition: str  # lt | le | gt | ge | eq
    value: int

    def holds(self, info: dict[str, int]) -> bool:
        figure = info[self.capacity_info]
        return {
            "lt": figure < self.value,
            "le": figure <= self.value,
            "gt": figure > self.value,
            "ge": figure >= self.value,
            "eq": figure == self.value,
        }[self.condition]

    def describe(self) -> str:
        return f"{self.capacity_info} {self.condition} {self.value}"


@dataclass(frozen=True)
class Subscription:
    id: str
    kind: str
    zone: str  # "" = the whole VIM
    types: tuple[str, ...]
    thresholds: tuple[Threshold, ...] = ()
    created: float = 0.0
    notification_url: str = ""  # POSTed to by events/callbacks.py (wired by http/)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Subscription:
        data = json.loads(text)
        data["types"] = tuple(data["types"])
        data["thresholds"] = tuple(
            Threshold(**dict(t, capacity_info="allocated"))
            if t.get("capacity_info") == "used"
            else Threshold(**t)
            for t in data["thresholds"]
        )
        data.setdefault("kind", "compute")
        return Subscription(**data)


def _schema_v1(conn: Connection) -> None:
    """The tables, with ``pos``: the order of the last write (what SQLite's rowid gave
    the INSERT OR REPLACE of before; PostgreSQL has no rowid). A reservations.sqlite3
    of an escnc from before the storage interface keeps its rows and their order."""
    found = sqlite_tables(conn)
    for old in ("reservations", "subscriptions"):
        new = f"capacity_{old}"
        if old in found and new not in found:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
            conn.execute(f"ALTER TABLE {new} ADD COLUMN pos INTEGER NOT NULL DEFAULT 0")
            conn.execute(f"UPDATE {new} SET pos = rowid")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {new} (id TEXT PRIMARY KEY,"
                     " data TEXT NOT NULL, pos {bigint} NOT NULL)")


MIGRATIONS = (Migration(1, run=_schema_v1),)


class RecordStore(FencedStore):
    """Reservations and capacity subscriptions as JSON rows (component ``capacity``:
    reservations.sqlite3, or the cluster's PostgreSQL database)."""

    def __init__(self, path: Path | None = None, *, database: str | None = None,
                 storage: Storage | None = None, fence: WriteFence | None = None) -> None:
        storage = component_storage("RecordStore", path, database, storage)
        self.storage = storage
        self._db = Component(storage, "capacity", MIGRATIONS, fence=fence)

    def reservations(self) -> list[Reservation]:
        return [Reservation.from_json(t) for t in self._load("reservations")]

    def subscriptions(self) -> list[Subscription]:
        return [Subscription.from_json(t) for t in self._load("subscriptions")]

    def _load(self, kind: str) -> list[str]:
        table = f"capacity_{kind}"  # kind: reservations | subscriptions
        with self._db.read() as conn:
            return [row[0] for row in conn.execute(f"SELECT data FROM {table} ORDER BY pos")]

    def put_reservation(self, r: Reservation) -> None:
        self._put("reservations", r.id, r.to_json())

    def put_subscription(self, s: Subscription) -> None:
        self._put("subscriptions", s.id, s.to_json())

    def _put(self, kind: str, key: str, data: str) -> None:
        table = f"capacity_{kind}"
        with self._db.write() as conn:
            conn.execute(
                f"INSERT INTO {table} (id, data, pos) VALUES"
                f" (?, ?, (SELECT COALESCE(MAX(pos), 0) + 1 FROM {table}))"
                " ON CONFLICT (id) DO UPDATE SET data = excluded.data, pos = excluded.pos",
                (key, data),
            )

    def delete_subscription(self, key: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM capacity_subscriptions WHERE id = ?", (key,))

    def close(self) -> None:
        self._db.close()
