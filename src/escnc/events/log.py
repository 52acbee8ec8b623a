"""Durable event log: every notification ever published, in order, in SQLite.

One row per event: a global sequence number (delivery order), the stream, the
eventTime (RFC 3339 text as sent, plus epoch seconds for range queries) and the
serialised body. Subscribers read it at their own pace; replay (RFC 5277 startTime)
is a range query. WAL mode lets readers run while the publisher appends.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from escnc.ns import NOTIF

_NOTIF_OPEN = f'<notification xmlns="{NOTIF}"><eventTime>'.encode()
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    event_time TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ms);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


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
    """Append-only (apart from retention) SQLite log. Thread safe."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        """``max_bytes``: budget for the stored bodies; beyond it the oldest events are
        dropped on append (down to 90 % of it), so the log cannot fill the disk."""
        self.path = path
        self.max_bytes = max_bytes if max_bytes and max_bytes > 0 else None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        with self._write_lock:
            self._writer.executescript(_SCHEMA)
            row = self._writer.execute("SELECT value FROM meta WHERE key='created'").fetchone()
            if row is None:
                self._writer.execute(
                    "INSERT INTO meta(key, value) VALUES('created', ?)",
                    (format_event_time(now_ms()),),
                )
                self._writer.commit()
                row = self._writer.execute(
                    "SELECT value FROM meta WHERE key='created'"
                ).fetchone()
            self.created = str(row[0])
            # bytes of all stored bodies: one scan at open, then kept up to date
            total = self._writer.execute("SELECT TOTAL(LENGTH(body)) FROM events").fetchone()
            self._bytes = int(total[0] or 0)
        # a pool, not per-thread connections: sessions and consumers come and go
        self._pool: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: committed events survive a process crash; an OS crash
        # may lose the last few, which replay cannot promise anyway.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("event log is closed")
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = self._connect()
            with self._pool_lock:
                self._all.append(conn)
        try:
            yield conn
        finally:
            with self._pool_lock:
                if not self._closed:
                    self._pool.append(conn)

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> object:
        with self._reader() as conn:
            row = conn.execute(sql, args).fetchone()
        return row[0] if row else None

    # -- writing ------------------------------------------------------------------

    def append(self, stream: str, ts_ms: int, event_time: str, body: bytes) -> int:
        """Append one event and commit. Callers serialise appends to keep time monotonic."""
        with self._write_lock:
            cur = self._writer.execute(
                "INSERT INTO events(stream, ts_ms, event_time, body) VALUES(?, ?, ?, ?)",
                (stream, ts_ms, event_time, body),
            )
            self._bytes += len(body)
            if self.max_bytes is not None and self._bytes > self.max_bytes:
                self._drop_oldest_locked(self._bytes - self.max_bytes * 9 // 10)
            self._writer.commit()
            return int(cur.lastrowid or 0)

    def _drop_oldest_locked(self, at_least: int) -> int:
        """Delete the oldest events whose bodies add up to ``at_least`` bytes (the newest
        event always stays). Costs the rows deleted, not the log's size."""
        freed, upto, removed = 0, 0, 0
        last = self._writer.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0
        rows = self._writer.execute(
            "SELECT seq, LENGTH(body) FROM events WHERE seq < ? ORDER BY seq", (last,)
        )
        for seq, size in rows:
            freed += int(size)
            upto = int(seq)
            removed += 1
            if freed >= at_least:
                break
        rows.close()
        if removed:
            self._writer.execute("DELETE FROM events WHERE seq <= ?", (upto,))
            self._bytes -= freed
        return removed

    @property
    def size_bytes(self) -> int:
        """Bytes of the stored notification bodies."""
        with self._write_lock:
            return self._bytes

    def prune(self, max_age_seconds: float | None, max_count: int | None) -> int:
        """Drop events older than ``max_age_seconds`` and beyond the newest ``max_count``."""
        removed = 0
        with self._write_lock:
            if max_age_seconds is not None:
                cutoff = now_ms() - int(max_age_seconds * 1000)
                self._bytes -= self._bytes_where("ts_ms < ?", (cutoff,))
                cur = self._writer.execute("DELETE FROM events WHERE ts_ms < ?", (cutoff,))
                removed += cur.rowcount
            if max_count is not None:
                where = "seq <= (SELECT MAX(seq) FROM events) - ?"
                self._bytes -= self._bytes_where(where, (max(0, max_count),))
                cur = self._writer.execute(f"DELETE FROM events WHERE {where}",
                                           (max(0, max_count),))
                removed += cur.rowcount
            self._writer.commit()
        return removed

    def _bytes_where(self, where: str, args: tuple[object, ...]) -> int:
        row = self._writer.execute(
            f"SELECT TOTAL(LENGTH(body)) FROM events WHERE {where}", args
        ).fetchone()
        return int(row[0] or 0)

    # -- reading ------------------------------------------------------------------

    def last_seq(self) -> int:
        value = self._one("SELECT seq FROM sqlite_sequence WHERE name='events'")
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
        with self._reader() as conn:
            rows = conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
        return [StoredEvent.make(int(r[0]), r[1], r[2], r[3], bytes(r[4])) for r in rows]

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
        with self._pool_lock:
            if self._closed:
                return
            self._closed = True
            conns, self._all, self._pool = self._all, [], []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        with self._write_lock:
            self._writer.close()
