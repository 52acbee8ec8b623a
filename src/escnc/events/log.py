"""Durable event log: every notification ever published, in order.

One row per event: a global sequence number (delivery order), the stream, the
eventTime (RFC 3339 text as sent, plus epoch milliseconds for range queries) and the
serialised body. Subscribers read it at their own pace; replay (RFC 5277 startTime)
is a range query.

The log lives behind the storage interface (escnc.storage): a SQLite file (the
default; WAL mode lets readers run while the publisher appends) or a PostgreSQL
database shared by several escnc nodes. The head row (``event_head``) hands out
sequence numbers: the row lock it takes is held to the commit, so two writers --
threads, processes or nodes -- commit in sequence order, a reader that saw seq N
never sees N-1 appear later, and eventTime never goes backwards along the sequence.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from escnc.ns import NOTIF
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

NOTIFY_CHANNEL = "escnc_events"  # PostgreSQL: payload = the new head's seq
_NOTIF_OPEN = f'<notification xmlns="{NOTIF}"><eventTime>'.encode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def format_event_time(ts_ms: int) -> str:
    """RFC 3339 with milliseconds and an explicit offset, as ESC sends it."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")


def parse_event_time(text: str) -> int:
    """RFC 3339 date-and-time (any offset, ``Z``, any fraction) -> epoch milliseconds.

    Fractions below a millisecond are dropped, so an eventTime we sent maps back to
    exactly the event it came from (a client resuming from its last eventTime).
    """
    value = text.strip()
    if value[-1:] in ("z", "Z"):
        value = value[:-1] + "+00:00"
    value = value.replace("t", "T", 1)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"date-and-time without a time zone: {text!r}")
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class StoredEvent:
    """One logged event. ``notification`` is the complete wire form, built once."""

    seq: int
    stream: str
    ts_ms: int
    event_time: str
    body: bytes
    notification: bytes = field(repr=False, default=b"")

    @classmethod
    def make(cls, seq: int, stream: str, ts_ms: int, event_time: str, body: bytes) -> StoredEvent:
        wire = b"".join(
            (_NOTIF_OPEN, event_time.encode(), b"</eventTime>", body, b"</notification>")
        )
        return cls(seq, stream, ts_ms, event_time, body, wire)

    def body_element(self) -> etree._Element:
        return etree.fromstring(self.body)

    def notification_element(self) -> etree._Element:
        return etree.fromstring(self.notification)


class EventLog:
    """Append-only (apart from retention) log on a :class:`Storage`. Thread safe."""

    def __init__(self, path: Path | None = None, max_bytes: int | None = None, *,
                 storage: Storage | None = None) -> None:
        """A SQLite file at ``path``, or ``storage`` (e.g. PostgreSQL).

        ``max_bytes``: budget for the stored bodies; beyond it the oldest events are
        dropped on append (down to 90 % of it), so the log cannot fill the disk."""
        if storage is None:
            if path is None:
                raise ValueError("EventLog needs a path or a storage")
            storage = SqliteStorage(path)
        self.path = path
        self.storage = storage
        self.max_bytes = max_bytes if max_bytes and max_bytes > 0 else None
        self._write_lock = threading.Lock()
        self._writer: Connection | None = storage.connect()
        migrate(self._writer, "events", MIGRATIONS)
        row = self._writer.execute("SELECT created FROM event_head WHERE id = 1").fetchone()
        self.created = str(row[0])
        # a pool, not per-thread connections: sessions and consumers come and go
        self._pool = ConnectionPool(storage, max_idle=16)
        self._closed = False

    def _write_conn(self) -> Connection:
        """The writer connection, reopened after the database went away."""
        if self._closed:
            raise StorageClosed("event log is closed")
        if self._writer is None or self._writer.closed:
            self._writer = self.storage.connect()
        return self._writer

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> object:
        if self._closed:
            raise StorageClosed("event log is closed")
        with self._pool.connection() as conn:
            row = conn.execute(sql, args).fetchone()
        return row[0] if row else None

    # -- writing ------------------------------------------------------------------

    def append(self, stream: str, ts_ms: int, event_time: str, body: bytes) -> int:
        """Append one event as given and commit; returns its sequence number."""
        event = self._append(stream, ts_ms, event_time, body)
        assert event is not None
        return event.seq

    def logged_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` an appended event carried (kept after retention drops the
        event itself, until :meth:`forget_keys`)."""
        found: set[str] = set()
        if self._closed:
            raise StorageClosed("event log is closed")
        with self._pool.connection() as conn:
            for i in range(0, len(keys), 500):
                part = list(keys[i : i + 500])
                rows = conn.execute(
                    "SELECT event_key FROM event_keys WHERE event_key IN"
                    f" ({','.join('?' * len(part))})", tuple(part),
                ).fetchall()
                found.update(str(r[0]) for r in rows)
        return found

    def adopt_keys(self, keys: Sequence[str]) -> None:
        """Log ``keys`` as published without publishing anything (one transaction):
        outcomes reported before keys existed (a log from an older escnc)."""
        with self._write_lock:
            conn = self._write_conn()
            with conn.transaction():
                for key in keys:
                    conn.execute(
                        "INSERT INTO event_keys(event_key, seq) VALUES(?, 0)"
                        " ON CONFLICT (event_key) DO NOTHING", (key,)
                    )

    def forget_keys(self, prefix: str) -> int:
        """Drop the idempotency keys starting with ``prefix`` (their owner is gone, so
        nothing will publish under them again)."""
        if not prefix:
            raise ValueError("forget_keys needs a prefix")
        with self._write_lock:
            conn = self._write_conn()
            with conn.transaction():
                cur = conn.execute(
                    "DELETE FROM event_keys WHERE substr(event_key, 1, ?) = ?",
                    (len(prefix), prefix),
                )
        return int(cur.rowcount)

    def append_event(self, stream: str, ts_ms: int, body: bytes) -> StoredEvent:
        """Append one event at ``ts_ms`` or, if another writer already logged a later
        one, at that later time (eventTime never goes backwards); commit; return it."""
        event = self._append(stream, ts_ms, None, body)
        assert event is not None  # no key: always appended
        return event

    def append_keyed(self, stream: str, ts_ms: int, body: bytes, key: str) -> StoredEvent | None:
        """:meth:`append_event` with an idempotency key, stored in the event's own
        transaction: an event whose key is already logged is not appended (None). A
        publisher that records "I owe this event" before publishing can so publish it
        again after a crash without it being sent twice (engine/outbox.py)."""
        return self._append(stream, ts_ms, None, body, key)

    def _append(self, stream: str, ts_ms: int, event_time: str | None,
                body: bytes, key: str | None = None) -> StoredEvent | None:
        with self._write_lock:
            conn = self._write_conn()
            try:
                with conn.transaction():
                    if key is not None and conn.execute(
                        "INSERT INTO event_keys(event_key, seq) VALUES(?, 0)"
                        " ON CONFLICT (event_key) DO NOTHING", (key,)
                    ).rowcount == 0:
                        return None  # logged before: nothing to commit
                    seq, ts, total = conn.execute(
                        "UPDATE event_head SET seq = seq + 1, bytes = bytes + ?,"
                        " ts_ms = CASE WHEN ts_ms > ? THEN ts_ms ELSE ? END"
                        " WHERE id = 1 RETURNING seq, ts_ms, bytes",
                        (len(body), ts_ms, ts_ms),
                    ).fetchone()
                    if event_time is None:
                        ts_ms, event_time = int(ts), format_event_time(int(ts))
                    conn.execute(
                        "INSERT INTO events(seq, stream, ts_ms, event_time, body)"
                        " VALUES(?, ?, ?, ?, ?)",
                        (seq, stream, ts_ms, event_time, body),
                    )
                    if key is not None:
                        conn.execute(
                            "UPDATE event_keys SET seq = ? WHERE event_key = ?", (seq, key)
                        )
                    if self.max_bytes is not None and total > self.max_bytes:
                        self._drop_oldest(conn, int(total) - self.max_bytes * 9 // 10, seq)
                    if conn.dialect.name == "postgresql":
                        # delivered at commit, in commit (= sequence) order: the other
                        # nodes' buses wake their consumers (EventBus._follow)
                        conn.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, str(seq)))
            except StorageUnavailable:
                conn.close()  # reconnect on the next append
                raise
        return StoredEvent.make(int(seq), stream, ts_ms, event_time, body)

    def _drop_oldest(self, conn: Connection, at_least: int, newest: int) -> int:
        """Delete the oldest events whose bodies add up to ``at_least`` bytes (the newest
        event always stays). Costs the rows deleted, not the log's size."""
        freed, upto, removed = 0, 0, 0
        while freed < at_least:
            rows = conn.execute(
                "SELECT seq, LENGTH(body) FROM events WHERE seq > ? AND seq < ?"
                " ORDER BY seq LIMIT 500", (upto, newest)
            ).fetchall()
            for seq, size in rows:
                freed += int(size)
                upto = int(seq)
                removed += 1
                if freed >= at_least:
                    break
            if len(rows) < 500:
                break
        if removed:
            conn.execute("DELETE FROM events WHERE seq <= ?", (upto,))
            conn.execute("UPDATE event_head SET bytes = bytes - ? WHERE id = 1", (freed,))
        return removed

    @property
    def size_bytes(self) -> int:
        """Bytes of the stored notification bodies."""
        value = self._one("SELECT bytes FROM event_head WHERE id = 1")
        return int(value) if isinstance(value, int) else 0

    def prune(self, max_age_seconds: float | None, max_count: int | None) -> int:
        """Drop events older than ``max_age_seconds`` and beyond the newest ``max_count``."""
        removed = 0
        with self._write_lock:
            conn = self._write_conn()
            with conn.transaction():
                if max_age_seconds is not None:
                    cutoff = now_ms() - int(max_age_seconds * 1000)
                    removed += self._delete_where(conn, "ts_ms < ?", (cutoff,))
                if max_count is not None:
                    where = "seq <= (SELECT MAX(seq) FROM events) - ?"
                    removed += self._delete_where(conn, where, (max(0, max_count),))
        return removed

    @staticmethod
    def _delete_where(conn: Connection, where: str, args: tuple[object, ...]) -> int:
        row = conn.execute(
            f"SELECT COALESCE(SUM(LENGTH(body)), 0) FROM events WHERE {where}", args
        ).fetchone()
        cur = conn.execute(f"DELETE FROM events WHERE {where}", args)
        conn.execute("UPDATE event_head SET bytes = bytes - ? WHERE id = 1", (int(row[0]),))
        return int(cur.rowcount)

    # -- reading ------------------------------------------------------------------

    def last_seq(self) -> int:
        value = self._one("SELECT seq FROM event_head WHERE id = 1")
        return int(value) if isinstance(value, int) else 0

    def first_seq(self) -> int:
        value = self._one("SELECT MIN(seq) FROM events")
        return int(value) if isinstance(value, int) else self.last_seq() + 1

    def count(self) -> int:
        value = self._one("SELECT COUNT(*) FROM events")
        return int(value) if isinstance(value, int) else 0

    def first_seq_at_or_after(self, ts_ms: int) -> int:
        """Sequence number of the first event with eventTime >= ts_ms (last_seq+1 if none)."""
        value = self._one("SELECT MIN(seq) FROM events WHERE ts_ms >= ?", (ts_ms,))
        return int(value) if isinstance(value, int) else self.last_seq() + 1

    def read_after(
        self, seq: int, limit: int = 1000, streams: Sequence[str] | None = None
    ) -> list[StoredEvent]:
        """Events with sequence number > ``seq``, oldest first."""
        sql = "SELECT seq, stream, ts_ms, event_time, body FROM events WHERE seq > ?"
        args: tuple[object, ...] = (seq,)
        if streams:
            sql += f" AND stream IN ({','.join('?' * len(streams))})"
            args += tuple(streams)
        if self._closed:
            raise StorageClosed("event log is closed")
        with self._pool.connection() as conn:
            rows = conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
        return [StoredEvent.make(int(r[0]), r[1], int(r[2]), r[3], bytes(r[4])) for r in rows]

    def replay(
        self, streams: Sequence[str] | None, start_ms: int | None = None, stop_ms: int | None = None
    ) -> Iterator[StoredEvent]:
        """Events of ``streams`` (all if None) with start <= eventTime <= stop, in order."""
        seq = 0 if start_ms is None else self.first_seq_at_or_after(start_ms) - 1
        while True:
            batch = self.read_after(seq, 1000, streams)
            for event in batch:
                if stop_ms is not None and event.ts_ms > stop_ms:
                    return
                yield event
            if len(batch) < 1000:
                return
            seq = batch[-1].seq

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._pool.close()
            if self._writer is not None:
                self._writer.close()


def _init_head(conn: Connection) -> None:
    """The head row, from what the log already holds (a log created before the
    storage interface kept its counter in sqlite_sequence and its birth in ``meta``)."""
    seq, ts, size = conn.execute(
        "SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(ts_ms), 0),"
        " COALESCE(SUM(LENGTH(body)), 0) FROM events"
    ).fetchone()
    created = format_event_time(now_ms())
    if conn.dialect.name == "sqlite":
        legacy = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE name IN ('sqlite_sequence', 'meta')")}
        if "sqlite_sequence" in legacy:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            seq = max(int(seq), int(row[0]) if row else 0)
        if "meta" in legacy:
            row = conn.execute("SELECT value FROM meta WHERE key = 'created'").fetchone()
            created = str(row[0]) if row else created
    conn.execute(
        "INSERT INTO event_head(id, seq, ts_ms, bytes, created) VALUES(1, ?, ?, ?, ?)",
        (int(seq), int(ts), int(size), created),
    )


MIGRATIONS = (
    Migration(1, statements=(
        "CREATE TABLE IF NOT EXISTS events (seq {bigint} PRIMARY KEY, stream TEXT NOT NULL,"
        " ts_ms {bigint} NOT NULL, event_time TEXT NOT NULL, body {blob} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ms)",
        "CREATE TABLE event_head (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " seq {bigint} NOT NULL, ts_ms {bigint} NOT NULL, bytes {bigint} NOT NULL,"
        " created TEXT NOT NULL)",
    ), run=_init_head),
    # idempotency keys of published events (EventLog.append_event): not pruned with
    # the events, since a publisher may ask again long after (engine/outbox.py)
    Migration(2, statements=(
        "CREATE TABLE IF NOT EXISTS event_keys (event_key TEXT PRIMARY KEY, seq {bigint} NOT NULL)",
    )),
)
