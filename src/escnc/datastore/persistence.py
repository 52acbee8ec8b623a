"""Durable units of running/startup and the rollback history, on ``escnc.storage``.

One row per unit (datastore root, root list entry, tenant, deployment) so a small
edit writes a small transaction. The backend is a SQLite file (the default,
state_dir/datastore.sqlite3) or a PostgreSQL database shared by several escnc nodes
(``settings.database``); the schema is the ``datastore`` component of
:func:`escnc.storage.migrate`.

Durability: on SQLite WAL + synchronous=FULL, so a commit is on disk when ``write``
(or ``write_batch``: several commits in one transaction and one fsync, group
commit) returns, before the client sees <ok/>. ``durable=False`` (the explicit
``durable_commits`` opt-out) uses synchronous=NORMAL (PostgreSQL:
``synchronous_commit = off``): the commit survives kill -9 of escnc, not an OS
crash. History ids are assigned by the caller (``next_history_id``) so a commit
knows its id before it is written; they never repeat (the head row keeps the top).

Every write transaction
- first calls ``fence.check_in(conn)`` when a fence was given (escnc.cluster): a
  leader that was replaced cannot commit; the transaction is rolled back and the
  fence's error (NotLeader) leaves ``write_batch``;
- moves the head row's ``version`` on by one (the head row's lock orders writers,
  also on several nodes) and, on PostgreSQL, sends ``NOTIFY escnc_datastore,
  '<version>'`` (delivered at commit): standbys follow with :meth:`Store.listen`
  and re-read (Datastore.follow).

A datastore.sqlite3 written before the storage interface (AUTOINCREMENT history,
no head row) is adopted by migration 1: its units, history and meta stay.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from escnc.datastore.edit import UnitKey
from escnc.storage import (
    Connection,
    ConnectionPool,
    Migration,
    Storage,
    StorageClosed,
    StorageUnavailable,
    migrate,
)
from escnc.storage.sqlite import SqliteStorage

COMPONENT = "datastore"
log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "escnc_datastore"  # PostgreSQL: payload = the head's new version


class WriteFence(Protocol):
    """What the persistence needs of a fence (escnc.cluster.Fence, SingleNodeFence):
    ``check()`` is local (may this node write at all), ``check_in`` the storage check."""

    def check(self) -> int: ...

    def check_in(self, conn: Connection) -> int: ...


def encode_key(key: UnitKey) -> str:
    return json.dumps(list(key))


def decode_key(text: str) -> UnitKey:
    return tuple(json.loads(text))


@dataclass(frozen=True)
class UnitRow:
    key: UnitKey
    seq: int
    xml: bytes


History = tuple[str, str, int, int, list[tuple[UnitKey, int, "bytes | None"]]]


@dataclass
class Write:
    """One commit's worth of changes to one datastore."""

    ds: str
    upserts: list[UnitRow]
    deletes: list[UnitKey]
    history: History | None = None  # (time, username, session id, nchanges, undo)
    hid: int | None = None  # the history id to insert (None: the next one)
    keep: int = 20
    meta: dict[str, str | None] | None = None
    replace_all: bool = False
    clear_history: bool = False  # the unit layout changed: old undo data is unusable


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    time: str
    username: str
    session_id: int
    nchanges: int
    # (unit key, seq, previous xml or None when the unit did not exist)
    undo: list[tuple[UnitKey, int, bytes | None]]


@dataclass(frozen=True)
class Snapshot:
    """Everything a Datastore loads, read in one transaction (consistent)."""

    version: int
    running: list[UnitRow] | None
    startup: list[UnitRow] | None
    next_hid: int
    meta: dict[str, str]


class Store:
    def __init__(self, path: Path | None = None, durable: bool = True, *,
                 storage: Storage | None = None, fence: WriteFence | None = None) -> None:
        """A SQLite file at ``path``, or ``storage`` (e.g. PostgreSQL). ``fence``:
        checked first thing in every write transaction (None: no check)."""
        if storage is None:
            if path is None:
                raise ValueError("Store needs a path or a storage")
            storage = SqliteStorage(path, synchronous="FULL" if durable else "NORMAL")
        self.storage = storage
        self.durable = durable
        self.fence = fence
        self._lock = threading.Lock()  # the writer connection, and the version below
        self._writer: Connection | None = None
        self._closed = False
        conn = self._write_conn()
        migrate(conn, COMPONENT, MIGRATIONS)
        self.version = self._head(conn)[0]  # the newest version written or loaded here
        self._pool = ConnectionPool(storage, max_idle=4)

    # -- connections ----------------------------------------------------------------

    def _write_conn(self) -> Connection:
        if self._closed:
            raise StorageClosed("datastore storage is closed")
        if self._writer is None or self._writer.closed:
            conn = self.storage.connect()
            if conn.dialect.name == "postgresql" and not self.durable:
                conn.execute("SET synchronous_commit TO off")
            self._writer = conn
        return self._writer

    def _read(self, fn: Callable[[Connection], object]) -> object:
        if self._closed:
            raise StorageClosed("datastore storage is closed")
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except StorageUnavailable:
            # a pooled connection the server ended (restart, failover): the pool
            # dropped it; a read is safe to repeat on a fresh one
            with self._pool.connection() as conn:
                return fn(conn)

    @staticmethod
    def _head(conn: Connection) -> tuple[int, int]:
        version, hid = conn.execute(
            "SELECT version, hid FROM datastore_head WHERE id = 1").fetchone()
        return int(version), int(hid)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pool.close()
            if self._writer is not None:
                self._writer.close()

    # -- reading --------------------------------------------------------------------

    @staticmethod
    def _load(conn: Connection, ds: str) -> list[UnitRow] | None:
        rows = conn.execute(
            "SELECT key, seq, xml FROM units WHERE ds = ? ORDER BY seq", (ds,)
        ).fetchall()
        if not rows:
            return None
        return [UnitRow(decode_key(k), int(s), bytes(x)) for k, s, x in rows]

    def load(self, ds: str) -> list[UnitRow] | None:
        return self._read(lambda c: self._load(c, ds))  # type: ignore[return-value]

    def snapshot(self) -> Snapshot:
        """running, startup, the next history id and meta as of one version."""

        def read(conn: Connection) -> Snapshot:
            # a transaction, so the parts belong together (PostgreSQL: one snapshot
            # under REPEATABLE READ; SQLite: the write lock excludes writers)
            with conn.transaction():
                if conn.dialect.name == "postgresql":
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                version, hid = self._head(conn)
                top = conn.execute("SELECT MAX(id) FROM history").fetchone()[0]
                meta = {str(k): str(v) for k, v in conn.execute("SELECT k, v FROM meta")}
                return Snapshot(version, self._load(conn, "running"),
                                self._load(conn, "startup"),
                                max(hid, int(top or 0)) + 1, meta)

        return self._read(read)  # type: ignore[return-value]

    def current_version(self) -> int:
        """The head's version in storage (another node may have moved it on)."""
        return self._read(lambda c: self._head(c)[0])  # type: ignore[return-value]

    def next_history_id(self) -> int:
        """The id the next history entry gets (ids are never reused)."""

        def read(conn: Connection) -> int:
            hid = self._head(conn)[1]
            top = conn.execute("SELECT MAX(id) FROM history").fetchone()[0]
            return max(hid, int(top or 0)) + 1

        return self._read(read)  # type: ignore[return-value]

    def history(self) -> list[HistoryEntry]:
        rows = self._read(lambda c: c.execute(
            "SELECT id, time, username, session_id, nchanges, undo FROM history"
            " ORDER BY id DESC").fetchall())
        out = []
        for hid, time, user, sid, n, blob in rows:  # type: ignore[attr-defined]
            undo = [
                (tuple(k), s, None if x is None else x.encode("utf-8"))
                for k, s, x in json.loads(blob)
            ]
            out.append(HistoryEntry(int(hid), time, user, int(sid), int(n), undo))
        return out

    def get_meta(self, k: str) -> str | None:
        row = self._read(lambda c: c.execute(
            "SELECT v FROM meta WHERE k = ?", (k,)).fetchone())
        return None if row is None else str(row[0])  # type: ignore[index]

    # -- writing --------------------------------------------------------------------

    def write(
        self,
        ds: str,
        upserts: list[UnitRow],
        deletes: list[UnitKey],
        history: History | None = None,
        keep: int = 20,
        meta: dict[str, str | None] | None = None,
        replace_all: bool = False,
    ) -> int | None:
        """Apply one commit atomically and durably; returns the history id, if any."""
        w = Write(ds, upserts, deletes, history, None, keep, meta, replace_all)
        return self.write_batch([w])[0]

    def write_batch(self, writes: list[Write]) -> list[int | None]:
        """Apply several commits, in order, in one durable transaction (one fsync)."""
        given = max((w.hid for w in writes if w.history is not None and w.hid is not None),
                    default=0)
        with self._lock:
            for attempt in (1, 2):
                conn = self._write_conn()
                sent = False  # the body ran: COMMIT was (being) sent
                try:
                    with conn.transaction():
                        hids, version = self._batch(conn, writes, given)
                        sent = True
                    break
                except StorageUnavailable:
                    conn.close()  # reconnect on the next write
                    # lost before COMMIT (a PostgreSQL restart or failover since the
                    # last write): nothing committed, so once more on a new connection
                    if sent or attempt == 2:
                        raise
                    log.warning("datastore connection lost before the commit; retrying")
            self.version = version
        return hids

    def _batch(self, conn: Connection, writes: list[Write],
               given: int) -> tuple[list[int | None], int]:
        if self.fence is not None:
            self.fence.check_in(conn)
        version, top = conn.execute(
            "UPDATE datastore_head SET version = version + 1,"
            " hid = CASE WHEN hid > ? THEN hid ELSE ? END"
            " WHERE id = 1 RETURNING version, hid", (given, given)
        ).fetchone()
        top = head = int(top)
        hids: list[int | None] = []
        for w in writes:
            hid = self._apply(conn, w, top)
            hids.append(hid)
            if hid is not None and hid > top:
                top = hid
        if top > head:  # ids given out here (writes without an id)
            conn.execute("UPDATE datastore_head SET hid = ? WHERE id = 1", (top,))
        if conn.dialect.name == "postgresql":
            conn.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, str(version)))
        return hids, int(version)

    def seen(self, version: int) -> bool:
        """Whether this node wrote or loaded ``version`` already (waits for a write
        in progress here: its own NOTIFY is then recognised)."""
        with self._lock:
            return version <= self.version

    def loaded(self, version: int) -> None:
        """A Datastore replaced its trees with the snapshot of ``version``."""
        with self._lock:
            self.version = max(self.version, version)

    @staticmethod
    def _apply(conn: Connection, w: Write, top: int) -> int | None:
        hid = None
        ds = w.ds
        if w.replace_all:
            conn.execute("DELETE FROM units WHERE ds = ?", (ds,))
        if w.clear_history:
            conn.execute("DELETE FROM history")
        if w.upserts:
            conn.executemany(
                "INSERT INTO units(ds, key, seq, xml) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (ds, key) DO UPDATE SET seq = excluded.seq, xml = excluded.xml",
                [(ds, encode_key(u.key), u.seq, u.xml) for u in w.upserts],
            )
        if w.deletes:
            conn.executemany("DELETE FROM units WHERE ds = ? AND key = ?",
                             [(ds, encode_key(k)) for k in w.deletes])
        if w.history is not None:
            time, user, sid, n, undo = w.history
            blob = json.dumps(
                [[list(k), s, None if x is None else x.decode("utf-8")] for k, s, x in undo]
            )
            hid = w.hid if w.hid is not None else top + 1
            conn.execute(
                "INSERT INTO history(id, time, username, session_id, nchanges, undo)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (hid, time, user, sid, n, blob),
            )
            conn.execute(
                "DELETE FROM history WHERE id NOT IN "
                "(SELECT id FROM history ORDER BY id DESC LIMIT ?)",
                (w.keep,),
            )
        for k, v in (w.meta or {}).items():
            if v is None:
                conn.execute("DELETE FROM meta WHERE k = ?", (k,))
            else:
                conn.execute("INSERT INTO meta(k, v) VALUES (?, ?)"
                             " ON CONFLICT (k) DO UPDATE SET v = excluded.v", (k, v))
        return hid

    # -- following another node's writes ----------------------------------------------

    def listen(self, stop: threading.Event, deliver: Callable[[int], None],
               poll: float = 1.0) -> bool:
        """PostgreSQL: call ``deliver(version)`` for every committed write (any node)
        and every ``poll`` seconds (a lost notification delays by at most that), until
        ``stop``. Blocks. Returns False at once when the backend cannot notify."""
        listen = getattr(self.storage, "listen", None)
        if listen is None:
            return False

        def note(payload: str | None) -> None:
            if stop.is_set():
                return
            if payload is not None:
                try:
                    deliver(int(payload))
                    return
                except ValueError:
                    pass
            try:
                deliver(self.current_version())
            except (StorageUnavailable, StorageClosed):
                pass  # the next poll tries again

        listen(NOTIFY_CHANNEL, stop, note, poll)
        return True


def _init_head(conn: Connection) -> None:
    """The head row, from what the tables already hold (a file written before the
    storage interface kept its history counter in sqlite_sequence)."""
    top = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM history").fetchone()[0])
    if conn.dialect.name == "sqlite":
        found = conn.execute(
            "SELECT name FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
        if found:
            row = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'history'").fetchone()
            top = max(top, int(row[0]) if row else 0)
    conn.execute("INSERT INTO datastore_head(id, version, hid) VALUES (1, 0, ?)", (top,))


MIGRATIONS = (
    # IF NOT EXISTS: an old-format file has units/history/meta with these columns
    # (its history id is AUTOINCREMENT, which takes explicit ids just the same)
    Migration(1, statements=(
        "CREATE TABLE IF NOT EXISTS units (ds TEXT NOT NULL, key TEXT NOT NULL,"
        " seq {bigint} NOT NULL, xml {blob} NOT NULL, PRIMARY KEY (ds, key))",
        "CREATE TABLE IF NOT EXISTS history (id {bigint} PRIMARY KEY, time TEXT NOT NULL,"
        " username TEXT NOT NULL, session_id {bigint} NOT NULL, nchanges INTEGER NOT NULL,"
        " undo TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)",
        "CREATE TABLE datastore_head (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " version {bigint} NOT NULL, hid {bigint} NOT NULL)",
    ), run=_init_head),
)
